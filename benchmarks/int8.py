"""int8 on the digits, five models side by side: RepVGG PTQ, two QAT remedies, RepOpt-VGG, plain.

Issue 13's measurement. Every model has the same deploy-form shape (a conv3x3-BN-ReLU VGG of the
chosen ``--arch``, 32x32 digits, the same data, schedule, epochs and learning rate), is trained
with mmengine's Runner (in this process, through the repo's configs) and then goes through the
SAME int8 path, :func:`rep_mm.quantization.quantize` (fold -> ``rep_mm.deploy.export`` ->
onnxruntime static QDQ int8, MinMax calibration on training images, the config's val metric,
interleaved onnxruntime latency):

1. ``RepVGG PTQ``: ``configs/repvgg/repvgg-tiny_1xb32_digits.py`` trained, converted, PTQ;
2. ``RepVGG QAT-after-conversion``: (1)'s checkpoint fine-tuned with
   ``configs/quantization/repvgg-tiny_qat-after-conversion_digits.py`` (insert BN after each
   fused conv + fake quant), its ``qat_deploy.pth`` then PTQ'd;
3. ``RepVGG EqK-QAT``: (1)'s checkpoint fine-tuned with
   ``configs/quantization/repvgg-tiny_eqk-qat_digits.py`` (fake-quantized equivalent kernel),
   its ``qat_deploy.pth`` then PTQ'd;
4. ``RepOpt-VGG PTQ``: Hyper-Search (``configs/repopt/repoptvgg-tiny-hs_1xb32_digits.py``) ->
   ``extract_scales_file`` -> target training with RepOptSGD
   (``configs/repopt/repoptvgg-tiny-target_1xb32_digits.py``), PTQ (the flow of
   :mod:`rep_mm.demo.repopt`, with the arch override applied to both configs);
5. ``plain VGG PTQ``: the RepOpt-VGG *target* structure (``rep_mm.RepOptVGG`` ``mode='target'``:
   one conv3x3 + BN + ReLU per block, no branches) trained with the RepVGG config's plain SGD
   optimizer (no scales, no RepOptInitHook): a normally trained network of the same shape.
   (``rep_mm.RepVGG`` has no option to disable its branches, so this is the plain baseline.)

The two QAT runs fine-tune ``--qat-epochs`` more epochs than the others (at 1/10 of the lr, as
their configs); their fake quantization is always per-channel int8 weights (the QAT code has no
per-tensor mode): under ``--per-tensor`` they are deployed per tensor although trained per
channel (recorded in the JSON).

Per model: fp32 and int8 top-1 (the val metric of ``quantize``'s report, digits test split),
and on the same images, from the graph outputs BEFORE the head's softmax (the Softmax input is
added as an extra graph output, nothing else changed), the int8-vs-fp32 logit error
``max|z8 - z32| / max|z32|`` and the logit SNR ``10 log10(sum z32^2 / sum (z8 - z32)^2)`` dB,
the share of changed predictions, and onnxruntime latency (1 thread, batch 1, medians of
interleaved runs) of the fp32 and int8 graphs.

Writes ``results/int8[_quick].{json,png,md}``. ``--quick``: 1 epoch of 2 iterations per
training on 64 images, 32 test images, 32 calibration images, 10 latency runs (a smoke test,
numbers mean nothing).

    python benchmarks/int8.py [--quick] [--per-tensor] [--epochs 4] [--arch tiny|a0-like|JSON]
"""
import copy
import json
import math
import os
import os.path as osp
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_parser, save_figure, save_results, subplots  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPVGG_CONFIG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
QAT_A_CONFIG = REPO / 'configs' / 'quantization' / 'repvgg-tiny_qat-after-conversion_digits.py'
QAT_B_CONFIG = REPO / 'configs' / 'quantization' / 'repvgg-tiny_eqk-qat_digits.py'
HS_CONFIG = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-hs_1xb32_digits.py'
TARGET_CONFIG = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'

ARCHS = {
    # the 7-block digits arch of every digits config (32/64/128/256 channels)
    'tiny': dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
    # RepVGG-A0's layout (2/4/14/1 blocks, widths 0.75 x3 + 2.5) at half its width: 22 blocks,
    # 24/48/96/640 channels... (0.375 * 64/128/256, 1.25 * 512)
    'a0-like': dict(num_blocks=[2, 4, 14, 1], width_factor=[0.375, 0.375, 0.375, 1.25]),
}
QUICK_TEST_IMAGES = 32
ROWS = ('RepVGG PTQ', 'RepVGG QAT-after-conversion', 'RepVGG EqK-QAT', 'RepOpt-VGG PTQ',
        'plain VGG PTQ')


def parse_arch(value: str) -> Dict:
    if value in ARCHS:
        return copy.deepcopy(ARCHS[value])
    arch = json.loads(value)
    if not isinstance(arch, dict) or {'num_blocks', 'width_factor'} - set(arch):
        raise SystemExit(f'--arch: {sorted(ARCHS)} or a JSON dict with num_blocks and '
                         f'width_factor, got {value!r}')
    return arch


def head_channels(arch: Dict) -> int:
    return int(512 * arch['width_factor'][3])


def set_model_arch(model_cfg, arch: Dict) -> None:
    """Put ``arch`` into an ImageClassifier config (or the one a QATModel wraps)."""
    inner = model_cfg.model if 'model' in model_cfg else model_cfg
    inner.backbone.arch = copy.deepcopy(arch)
    inner.head.in_channels = head_channels(arch)


def set_epochs(cfg, epochs: int, warmup: bool) -> None:
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = epochs
    if warmup and epochs > 1:
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
                 convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', T_max=epochs - 1, by_epoch=True, begin=1,
                 end=epochs, eta_min=0.0, convert_to_iter_based=True)]
    else:
        cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=epochs, by_epoch=True,
                                    begin=0, end=epochs, eta_min=0.0,
                                    convert_to_iter_based=True)]


def make_cfg(config: Path, work_dir: str, data_dir: str, quick: bool, counts: Dict, arch: Dict,
             epochs: int, warmup: bool, weight_decay: Optional[float], seed: int = 0):
    from rep_mm.demo.common import digits_demo_config
    cfg = digits_demo_config(config, data_dir, work_dir, quick, counts)
    set_model_arch(cfg.model, arch)
    set_epochs(cfg, epochs, warmup)
    if weight_decay is not None:
        cfg.optim_wrapper.optimizer.weight_decay = weight_decay
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs,
                                        max_keep_ckpts=1)
    cfg.randomness = dict(seed=seed)
    if quick:  # 32 test images (the quick demo config has 128): keeps --quick under 60 s
        from rep_mm.demo.common import spread_indices
        for key in ('val_dataloader', 'test_dataloader'):
            cfg[key]['dataset']['indices'] = spread_indices(counts['test'], QUICK_TEST_IMAGES)
        for hook in cfg.get('custom_hooks') or []:
            if str(hook.get('type', '')).endswith('QATHook') and 'calib_batches' in hook:
                hook['calib_batches'] = 2
    return cfg


def dump(cfg, path: str) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    cfg.dump(path)
    return path


def train(cfg, name: str) -> Dict:
    from rep_mm.demo.repopt import _train_and_validate
    result = _train_and_validate(cfg, name)
    del result['runner']
    return result


# ----------------------------------------------------------------------------- measurement
def with_logits_output(onnx_path: str, out_path: str) -> str:
    """A copy of ``onnx_path`` whose Softmax input is also a graph output (the pre-softmax
    logits); raises if the graph has no single Softmax feeding its output."""
    import onnx
    model = onnx.load(onnx_path)
    softmax = [n for n in model.graph.node if n.op_type == 'Softmax']
    if len(softmax) != 1:
        raise RuntimeError(f'{onnx_path}: {len(softmax)} Softmax nodes, expected 1')
    name = softmax[0].input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                 None))
    onnx.save(model, out_path)
    return name


def graph_logits(cfg_path: str, report: Dict, work: Path) -> Dict[str, np.ndarray]:
    """Pre-softmax logits of the fp32 and int8 graphs on every val image (batch 1, the val
    pipeline and data preprocessor as :func:`rep_mm.quantization.evaluate` feeds them)."""
    from rep_mm.quantization.calibration import _static_hw
    from rep_mm.quantization.data import build_dataset, build_preprocessor, load_config, \
        to_onnx_input
    from rep_mm.quantization.latency import make_session
    cfg = load_config(cfg_path)
    preprocessor = build_preprocessor(cfg, 'mmpretrain')
    sessions = {}
    for key in ('fp32', 'int8'):
        path = str(work / f'{key}_with_logits.onnx')
        with_logits_output(report[f'{key}_onnx'], path)
        sessions[key] = make_session(Path(path), 1)
    shape = sessions['fp32'].get_inputs()[0].shape
    input_name = sessions['fp32'].get_inputs()[0].name
    dataset = build_dataset(cfg, 'val_dataloader', _static_hw(shape), 'mmpretrain',
                            'validation')
    out = {'fp32': [], 'int8': [], 'labels': []}
    for index in range(len(dataset)):
        array, samples = to_onnx_input(dataset[index], preprocessor, shape, f'val {index}')
        for key, session in sessions.items():
            out[key].append(session.run(None, {input_name: array})[-1])
        out['labels'].append(int(samples[0].gt_label[0]))
    return {k: np.concatenate(v) if k != 'labels' else np.asarray(v) for k, v in out.items()}


def logit_errors(z: Dict[str, np.ndarray]) -> Dict:
    z32, z8 = z['fp32'].astype(np.float64), z['int8'].astype(np.float64)
    noise = float(((z8 - z32) ** 2).sum())
    return dict(
        max_abs_rel_error=float(np.abs(z8 - z32).max() / np.abs(z32).max()),
        snr_db=float(10 * math.log10(float((z32 ** 2).sum()) / noise)) if noise else math.inf,
        changed_predictions=int((z8.argmax(1) != z32.argmax(1)).sum()),
        top1_from_logits=dict(fp32=100.0 * float((z32.argmax(1) == z['labels']).mean()),
                              int8=100.0 * float((z8.argmax(1) == z['labels']).mean())),
        images=int(len(z['labels'])))


def measure(name: str, cfg_path: str, checkpoint: str, work: Path, args, runs: int,
            calib: int) -> Dict:
    from rep_mm.quantization import quantize
    report = quantize(cfg_path, str(work), checkpoint=checkpoint, calib=calib,
                      per_tensor=args.per_tensor, threads=1, runs=runs, overwrite=True,
                      quiet=True)
    metrics = report['evaluation']['metrics']
    lat = report['latency']['model']
    row = dict(
        fp32_top1=metrics['fp32']['accuracy/top1'], int8_top1=metrics['int8']['accuracy/top1'],
        latency_ms=dict(fp32=lat['fp32']['median_ms'], int8=lat['int8']['median_ms']),
        latency_int8_over_fp32=report['latency']['model_ratio'],
        int8_kernels=report['int8_kernels'], quantization=report['quantization'],
        calibration_images=report['calibration']['used'], config=cfg_path,
        checkpoint=checkpoint, quant_report=str(work / 'quant_report.json'))
    row['drop'] = row['fp32_top1'] - row['int8_top1']
    row['logits'] = logit_errors(graph_logits(cfg_path, report, work))
    print(f"[int8] {name}: fp32 {row['fp32_top1']:.2f} int8 {row['int8_top1']:.2f} "
          f"SNR {row['logits']['snr_db']:.1f} dB, latency {row['latency_ms']['fp32']:.3f} / "
          f"{row['latency_ms']['int8']:.3f} ms", flush=True)
    return row


# ----------------------------------------------------------------------------- outputs
def plot(payload: Dict, path: Path) -> None:
    rows = list(payload['rows'])
    fig, (ax, ax2) = subplots(1, 2, figsize=(12, 4.2))
    width = 0.38
    for i, key in enumerate(('fp32_top1', 'int8_top1')):
        xs = [j + (i - 0.5) * width for j in range(len(rows))]
        values = [payload['rows'][r][key] for r in rows]
        ax.bar(xs, values, width, label=key.replace('_top1', ''))
        for x, v in zip(xs, values):
            ax.text(x, v, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
    labels = [r.replace(' ', '\n', 1) for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel('digits test top-1 (%)')
    ax.set_ylim(0, 115)
    ax.legend(fontsize=7, loc='lower right')
    ax.set_title('top-1, fp32 vs onnxruntime int8', fontsize=9)
    snr = [payload['rows'][r]['logits']['snr_db'] for r in rows]
    ax2.bar(range(len(rows)), snr, 0.6, color='tab:green')
    for x, v in enumerate(snr):
        ax2.text(x, v, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
    ax2.set_xticks(range(len(rows)), labels, fontsize=7)
    ax2.set_ylabel('int8 vs fp32 logit SNR (dB, higher = closer)')
    ax2.set_title('logit SNR', fontsize=9)
    setting = payload['setting']
    fig.suptitle(('QUICK smoke run: numbers mean nothing; ' if payload['quick'] else '')
                 + f"arch {setting['arch_name']}, {setting['epochs']} epochs, "
                 f"{'per-tensor' if setting['per_tensor'] else 'per-channel'} int8 weights",
                 fontsize=9)
    save_figure(fig, path, dpi=110)


def markdown(payload: Dict) -> str:
    s = payload['setting']
    kind = 'QUICK smoke run, numbers mean nothing' if payload['quick'] else 'measured'
    lines = [f'# int8 on the digits ({kind})',
             '',
             f"arch `{json.dumps(s['arch'])}`, {s['epochs']} epochs (+{s['qat_epochs']} QAT), "
             f"weights {'per tensor' if s['per_tensor'] else 'per channel'}, activations per "
             f"tensor (uint8, MinMax), {s['calibration_images']} calibration images, "
             f"{payload['test_images']} test images, weight decay {s['weight_decay']}, "
             f"seed {s['seed']}, "
             f"onnxruntime 1 thread, batch 1, {s['latency_runs']} interleaved runs.", '',
             '| model | fp32 top-1 | int8 top-1 | drop | max\\|dz\\|/max\\|z\\| | logit SNR (dB) '
             '| changed preds | fp32 ms | int8 ms | int8/fp32 |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, r in payload['rows'].items():
        lg = r['logits']
        lines.append(f"| {name} | {r['fp32_top1']:.2f} | {r['int8_top1']:.2f} | "
                     f"{r['drop']:+.2f} | {lg['max_abs_rel_error']:.4f} | {lg['snr_db']:.1f} | "
                     f"{lg['changed_predictions']} | {r['latency_ms']['fp32']:.3f} | "
                     f"{r['latency_ms']['int8']:.3f} | {r['latency_int8_over_fp32']:.2f} |")
    lines += ['', *[f'- {n}' for n in payload['notes']], '']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = benchmark_parser(__doc__, 'tiny smoke run (< 60 s on one thread)')
    parser.add_argument('--per-tensor', action='store_true',
                        help='per-tensor int8 weights (default per output channel)')
    parser.add_argument('--epochs', type=int, default=None, help='fp32 epochs (default 4)')
    parser.add_argument('--qat-epochs', type=int, default=None, help='QAT epochs (default 2)')
    parser.add_argument('--arch', default='tiny',
                        help=f"{' | '.join(ARCHS)} | a JSON arch dict (default tiny)")
    parser.add_argument('--weight-decay', type=float, default=None,
                        help='weight decay of the fp32 trainings (default the configs\' 1e-4)')
    parser.add_argument('--calib', type=int, default=None,
                        help='calibration images (default 512; quick 32)')
    parser.add_argument('--runs', type=int, default=None,
                        help='interleaved latency runs per graph (default 200; quick 20)')
    parser.add_argument('--seed', type=int, default=0, help='training seed of every model')
    parser.add_argument('--work-dir', default=None, help='default: a temporary directory')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    arch = parse_arch(args.arch)
    epochs = args.epochs or (1 if args.quick else 4)
    qat_epochs = args.qat_epochs or (1 if args.quick else 2)
    calib = args.calib or (32 if args.quick else 512)
    runs = args.runs or (10 if args.quick else 200)

    from rep_mm.datasets import prepare_digits
    from rep_mm.cli.extract_scales import extract_scales_file
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = osp.abspath(args.work_dir or tmp)
        data_dir = osp.join(work, 'data', 'digits')
        counts = prepare_digits(data_dir, size=32, seed=0)['counts']
        common = dict(data_dir=data_dir, quick=args.quick, counts=counts, arch=arch,
                      seed=args.seed)
        wd = args.weight_decay

        def cfg_of(config, sub, n_epochs=epochs, warmup=True, decay=wd):
            return make_cfg(config, osp.join(work, sub), epochs=n_epochs, warmup=warmup,
                            weight_decay=decay, **common)

        trained, cfgs = {}, {}
        # 1. RepVGG
        repvgg_cfg = cfg_of(REPVGG_CONFIG, 'repvgg')
        cfgs['repvgg'] = dump(repvgg_cfg, osp.join(work, 'configs', 'repvgg.py'))
        trained['repvgg'] = train(repvgg_cfg, 'int8_repvgg')
        # 2. / 3. QAT from (1)'s training-form checkpoint
        for key, config in (('qat_a', QAT_A_CONFIG), ('qat_b', QAT_B_CONFIG)):
            cfg = cfg_of(config, key, qat_epochs, warmup=False, decay=None)
            cfg.load_from = trained['repvgg']['checkpoint']
            trained[key] = train(cfg, f'int8_{key}')
            trained[key]['deploy_checkpoint'] = osp.join(work, key, 'qat_deploy.pth')
        # 4. RepOpt-VGG: Hyper-Search -> scales -> target with RepOptSGD
        hs_cfg = cfg_of(HS_CONFIG, 'repopt_hs')
        trained['repopt_hs'] = train(hs_cfg, 'int8_repopt_hs')
        target_cfg = cfg_of(TARGET_CONFIG, 'repopt_target')
        scales = osp.join(work, 'scales.pth')
        target_cfg.optim_wrapper.scales = scales
        cfgs['repopt'] = dump(target_cfg, osp.join(work, 'configs', 'repopt_target.py'))
        extract_scales_file(trained['repopt_hs']['checkpoint'], scales, cfgs['repopt'],
                            overwrite=True)
        trained['repopt'] = train(target_cfg, 'int8_repopt_target')
        # 5. the same plain structure, plain SGD (the RepVGG config's optimizer), default init
        plain_cfg = cfg_of(TARGET_CONFIG, 'plain')
        plain_cfg.optim_wrapper = copy.deepcopy(repvgg_cfg.optim_wrapper)
        plain_cfg.custom_hooks = []
        cfgs['plain'] = dump(plain_cfg, osp.join(work, 'configs', 'plain.py'))
        trained['plain'] = train(plain_cfg, 'int8_plain')

        jobs = (('RepVGG PTQ', cfgs['repvgg'], trained['repvgg']['checkpoint']),
                ('RepVGG QAT-after-conversion', cfgs['repvgg'],
                 trained['qat_a']['deploy_checkpoint']),
                ('RepVGG EqK-QAT', cfgs['repvgg'], trained['qat_b']['deploy_checkpoint']),
                ('RepOpt-VGG PTQ', cfgs['repopt'], trained['repopt']['checkpoint']),
                ('plain VGG PTQ', cfgs['plain'], trained['plain']['checkpoint']))
        rows = {}
        for (name, cfg_path, ckpt), key in zip(jobs, ('repvgg', 'qat_a', 'qat_b', 'repopt',
                                                      'plain')):
            rows[name] = measure(name, cfg_path, ckpt, Path(work) / 'int8' / key, args, runs,
                                 calib)
            rows[name]['training'] = {k: v for k, v in trained[key].items()
                                      if k in ('top1', 'train_seconds', 'iterations')}
        rows['RepOpt-VGG PTQ']['training']['hs_top1'] = trained['repopt_hs']['top1']
        test_images = rows['RepVGG PTQ']['logits']['images']
    notes = [
        'int8 = rep_mm.quantization.quantize: onnxruntime static QDQ, MinMax calibration on '
        'training images, the head (last Gemm onward) kept float, as rep-mm quantize does',
        'logit error / SNR are computed on the pre-softmax outputs of the two graphs over the '
        'test images (batch 1); top-1 columns are the val metric of quantize\'s report',
        'QAT rows fine-tune (1)\'s checkpoint for the extra QAT epochs at lr 0.005; their fake '
        'quantization is per-channel int8 weights' + (
            ' although this run deploys per-tensor weights (mismatch; the QAT code has no '
            'per-tensor mode)' if args.per_tensor else ''),
        'plain VGG = rep_mm.RepOptVGG mode=target (conv3x3+BN+ReLU blocks) trained with the '
        'RepVGG config\'s SGD (rep_mm.RepVGG has no option to drop its branches)',
        'latency: onnxruntime CPU, 1 intra-op thread, batch 1, medians of interleaved runs on a '
        'shared 2-core machine: compare the ratios, not the absolute times']
    payload = dict(
        quick=args.quick, test_images=test_images,
        setting=dict(arch_name=args.arch if args.arch in ARCHS else 'custom', arch=arch,
                     epochs=epochs, qat_epochs=qat_epochs, seed=args.seed,
                     per_tensor=args.per_tensor,
                     weights='per-tensor' if args.per_tensor else 'per-channel',
                     activations='per-tensor uint8', weight_decay=wd if wd is not None
                     else 1e-4, calibration_images=calib, latency_runs=runs,
                     qat_fake_quant_weights='per-channel'),
        rows=rows, notes=notes, total_seconds=round(time.perf_counter() - started, 1))
    name = save_results('int8', args.quick, payload, args.out_dir, plot)
    (args.out_dir / f'{name}.md').write_text(markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == '__main__':
    main()
