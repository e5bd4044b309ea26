"""Shared parts of the int8 benchmark (``benchmarks/int8.py``): training a config with a quiet
mmengine Runner, the PTQ call, logit error statistics, and the JSON / PNG / markdown outputs.

Both tasks (:mod:`int8_cls`, :mod:`int8_seg`) give, per model, a *row*: the fp32 and int8 value
of the task's metric (``quantize``'s report), the int8-vs-fp32 logit statistics of
:class:`LogitStats`, and the onnxruntime latencies."""
import copy
import itertools
import math
import os
import os.path as osp
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

ROWS = ('RepVGG PTQ', 'RepVGG QAT-after-conversion', 'RepVGG EqK-QAT', 'RepOpt-VGG PTQ',
        'plain VGG PTQ')

# where each row's model comes from: (key in the trained runs, config key, checkpoint field)
ROW_SOURCES = (('repvgg', 'repvgg', 'checkpoint'), ('qat_a', 'repvgg', 'deploy_checkpoint'),
               ('qat_b', 'repvgg', 'deploy_checkpoint'), ('repopt', 'repopt', 'checkpoint'),
               ('plain', 'plain', 'checkpoint'))


def row_jobs(cfgs: Dict[str, str], trained: Dict[str, Dict]) -> List[Tuple[str, str, str, str]]:
    """``(row name, run key, config path, checkpoint)`` of the five rows, in :data:`ROWS` order:
    the QAT rows are evaluated with the stock config on their deploy-form checkpoints."""
    return [(name, key, cfgs[cfg_key], trained[key][field])
            for name, (key, cfg_key, field) in zip(ROWS, ROW_SOURCES)]
_RUNNER_IDS = itertools.count()


def dump(cfg, path: str) -> str:
    """Write ``cfg`` to ``path`` (directories created); returns the path."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    cfg.dump(path)
    return path


def train(cfg, name: str, metric: str) -> Dict:
    """Train ``cfg`` with a fresh Runner (console logging at WARNING, full log in its work
    dir), then validate: ``{metric, train_seconds, iterations, checkpoint}`` where
    ``checkpoint`` is the last one the CheckpointHook wrote."""
    from mmengine.runner import EpochBasedTrainLoop, Runner

    from rep_mm.io import runner_allow_list
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = f'int8_{name}_{next(_RUNNER_IDS)}'  # distinct loggers per Runner
    cfg.log_level = 'WARNING'
    print(f'[int8] train {name} ...', flush=True)
    runner = Runner.from_cfg(cfg)
    started = time.perf_counter()
    with runner_allow_list():
        runner.train()
    seconds = time.perf_counter() - started
    metrics = runner.val()
    loop = runner.train_loop
    step = (f'epoch_{loop.max_epochs}' if isinstance(loop, EpochBasedTrainLoop)
            else f'iter_{loop.max_iters}')
    checkpoint = osp.join(cfg.work_dir, f'{step}.pth')
    if not osp.isfile(checkpoint):
        raise RuntimeError(f'{name}: the run wrote no {checkpoint}')
    print(f'[int8] {name}: {metric} {float(metrics[metric]):.2f} after {seconds:.0f} s',
          flush=True)
    return {metric: float(metrics[metric]), 'train_seconds': round(seconds, 2),
            'iterations': int(runner.iter), 'checkpoint': checkpoint}


def run_quantize(cfg_path: str, checkpoint: str, work: Path, per_tensor: bool, calib: int,
                 runs: int, deploy_config: Optional[str] = None) -> Dict:
    """:func:`rep_mm.quantization.quantize` of ``checkpoint`` (1 thread, quiet)."""
    from rep_mm.quantization import quantize
    return quantize(cfg_path, str(work), checkpoint=checkpoint, calib=calib,
                    per_tensor=per_tensor, deploy_config=deploy_config, threads=1, runs=runs,
                    overwrite=True, quiet=True)


class LogitStats:
    """Running int8-vs-fp32 statistics of logit arrays (any shape, class axis 1):
    ``max|z8 - z32| / max|z32|``, SNR ``10 log10(sum z32^2 / sum (z8 - z32)^2)`` dB (float64
    sums) and the count of arg-max changes along axis 1."""

    def __init__(self) -> None:
        self.signal = self.noise = 0.0
        self.max_diff = self.max_ref = 0.0
        self.changed = self.positions = 0

    def add(self, z32: np.ndarray, z8: np.ndarray) -> None:
        a, b = z32.astype(np.float64), z8.astype(np.float64)
        self.signal += float((a * a).sum())
        self.noise += float(((b - a) ** 2).sum())
        self.max_diff = max(self.max_diff, float(np.abs(b - a).max()))
        self.max_ref = max(self.max_ref, float(np.abs(a).max()))
        changed = a.argmax(1) != b.argmax(1)
        self.changed += int(changed.sum())
        self.positions += int(changed.size)

    def result(self) -> Dict:
        snr = (10 * math.log10(self.signal / self.noise) if self.noise else math.inf)
        return dict(max_abs_rel_error=self.max_diff / self.max_ref, snr_db=snr,
                    changed_argmax=self.changed, argmax_positions=self.positions)


def base_row(report: Dict, metric: str, cfg_path: str, checkpoint: str, work: Path) -> Dict:
    """The fields every row takes from ``quantize``'s report."""
    metrics = report['evaluation']['metrics']
    lat = report['latency']
    row = dict(fp32=metrics['fp32'][metric], int8=metrics['int8'][metric],
               latency_ms=dict(fp32=lat['model']['fp32']['median_ms'],
                               int8=lat['model']['int8']['median_ms']),
               latency_int8_over_fp32=lat['model_ratio'],
               end_to_end_int8_over_fp32=lat['end_to_end_ratio'],
               agreement=report['evaluation']['agreement']['int8'],
               int8_kernels=report['int8_kernels'], quantization=report['quantization'],
               calibration_images=report['calibration']['used'], config=cfg_path,
               checkpoint=checkpoint, quant_report=str(work / 'quant_report.json'))
    row['drop'] = row['fp32'] - row['int8']
    return row


def print_row(task: str, name: str, metric: str, row: Dict) -> None:
    print(f"[int8] {task} {name}: fp32 {metric} {row['fp32']:.2f} int8 {row['int8']:.2f} "
          f"SNR {row['logits']['snr_db']:.1f} dB, latency {row['latency_ms']['fp32']:.3f} / "
          f"{row['latency_ms']['int8']:.3f} ms", flush=True)


# ----------------------------------------------------------------------------- outputs
def plot(payload: Dict, path: Path) -> None:
    """Per task: fp32 vs int8 metric bars and logit SNR bars."""
    from common import save_figure, subplots
    tasks = [t for t in ('classification', 'segmentation') if t in payload['tasks']]
    fig, axes = subplots(len(tasks), 2, figsize=(12, 4.2 * len(tasks)), squeeze=False)
    for (ax, ax2), task in zip(axes, tasks):
        part = payload['tasks'][task]
        rows, label = list(part['rows']), part['metric_label']
        width = 0.38
        for i, key in enumerate(('fp32', 'int8')):
            xs = [j + (i - 0.5) * width for j in range(len(rows))]
            values = [part['rows'][r][key] for r in rows]
            ax.bar(xs, values, width, label=key)
            for x, v in zip(xs, values):
                ax.text(x, v, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
        labels = [r.replace(' ', '\n', 1) for r in rows]
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel(label)
        ax.set_ylim(0, 115)
        ax.legend(fontsize=7, loc='lower right')
        ax.set_title(f'{task}: {label}, fp32 vs onnxruntime int8', fontsize=9)
        snr = [part['rows'][r]['logits']['snr_db'] for r in rows]
        ax2.bar(range(len(rows)), snr, 0.6, color='tab:green')
        for x, v in enumerate(snr):
            ax2.text(x, v, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
        ax2.set_xticks(range(len(rows)), labels, fontsize=7)
        ax2.set_ylabel('int8 vs fp32 logit SNR (dB, higher = closer)')
        ax2.set_title(f'{task}: logit SNR', fontsize=9)
    setting = payload['setting']
    fig.suptitle(('QUICK smoke run: numbers mean nothing; ' if payload['quick'] else '')
                 + f"{'per-tensor' if setting['per_tensor'] else 'per-channel'} int8 weights, "
                 f"seed {setting['seed']}", fontsize=9)
    save_figure(fig, path, dpi=110)


def table(part: Dict) -> List[str]:
    """Markdown table of one task's rows. Besides each row's own fp32 -> int8 drop, the QAT rows
    show the fake-quantized PyTorch val metric at the end of their fine-tuning and their int8
    metric against the fp32 metric of row (1), the model they were fine-tuned from."""
    label, metric = part['metric_label'], part['metric']
    start = part['rows'][ROWS[0]]['fp32']
    lines = [f'| model | fp32 {label} | int8 {label} | drop | QAT fake-quant val | '
             f'int8 vs (1) fp32 | max\\|dz\\|/max\\|z\\| | logit SNR (dB) | changed argmax | '
             f'fp32 ms | int8 ms | int8/fp32 |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, r in part['rows'].items():
        lg = r['logits']
        qat = 'QAT' in name
        fq = f"{r['training'][metric]:.2f}" if qat and 'training' in r else '-'
        vs_start = f"{r['int8'] - start:+.2f}" if qat else '-'
        lines.append(f"| {name} | {r['fp32']:.2f} | {r['int8']:.2f} | {r['drop']:+.2f} | {fq} | "
                     f"{vs_start} | {lg['max_abs_rel_error']:.4f} | {lg['snr_db']:.1f} | "
                     f"{lg['changed_argmax']} / {lg['argmax_positions']} | "
                     f"{r['latency_ms']['fp32']:.3f} | {r['latency_ms']['int8']:.3f} | "
                     f"{r['latency_int8_over_fp32']:.2f} |")
    return lines


def markdown(payload: Dict, describe: Dict[str, Callable[[Dict], str]]) -> str:
    """The whole report: per task a settings line (``describe[task](part)``), its table and
    its notes; then the common notes."""
    kind = 'QUICK smoke run, numbers mean nothing' if payload['quick'] else 'measured'
    lines = [f'# int8: five models side by side ({kind})', '']
    for task, part in payload['tasks'].items():
        lines += [f'## {task}', '', describe[task](part), '', *table(part), '',
                  *[f'- {n}' for n in part['notes']], '']
    lines += ['## common', '', *[f'- {n}' for n in payload['notes']], '']
    return '\n'.join(lines)
