"""The RepOptimizer demo on real digits: Hyper-Search -> scales file -> RepOpt-VGG training.

``python -m rep_mm.demo_repopt [--work-dir DIR] [--quick]``:

1. writes scikit-learn's digits as a 32x32 image folder tree
   (:func:`rep_mm.datasets.prepare_digits`);
2. trains ``configs/repopt/repoptvgg-tiny-hs_1xb32_digits.py`` (a tiny RepOpt-VGG with
   trainable branch scales, plain SGD) with mmengine's Runner and evaluates it;
3. extracts the searched scales from its last checkpoint into ``WORK_DIR/scales.pth``, matched by
   name to the target model (:func:`rep_mm.extract_scales.extract_scales_file`);
4. trains ``configs/repopt/repoptvgg-tiny-target_1xb32_digits.py`` (the same arch as a plain
   conv3x3 + BN VGG) with RepOptSGD from those scales (RepOptInitHook re-initialises it) and
   evaluates it; writes ``WORK_DIR/repopt_summary.json``.

``--quick`` trains each model for 8 iterations on 64 images and tests on 128 (seconds).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from rep_mm.demo_utils import build_runner, write_json_atomic

__all__ = ['run_repopt_demo', 'format_repopt_table', 'main', 'HS_CONFIG', 'TARGET_CONFIG',
           'SUMMARY_NAME', 'SCALES_NAME']

REPO_ROOT = Path(__file__).resolve().parents[1]
HS_CONFIG = REPO_ROOT / 'configs' / 'repopt' / 'repoptvgg-tiny-hs_1xb32_digits.py'
TARGET_CONFIG = REPO_ROOT / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'
SUMMARY_NAME = 'repopt_summary.json'
SCALES_NAME = 'scales.pth'


def _train_and_validate(cfg, name: str) -> Dict:
    """Train with a fresh Runner, then run its validation loop: top-1, seconds, checkpoint."""
    runner = build_runner(cfg, name)
    started = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - started
    metrics = runner.val()
    return dict(top1=float(metrics['accuracy/top1']), train_seconds=round(seconds, 2),
                checkpoint=osp.join(cfg.work_dir, f'epoch_{runner.max_epochs}.pth'),
                iterations=int(runner.iter), runner=runner)


def _scale_statistics(path: str) -> Dict[str, Dict[str, float]]:
    """min / mean / max of each kind of scale (conv, 1x1, identity) over the file."""
    scales = torch.load(path, map_location='cpu', weights_only=True)
    stats = {}
    for kind in ('scale_conv', 'scale_1x1', 'scale_identity'):
        values = torch.cat([v.flatten() for k, v in scales.items() if f'.{kind}.' in k])
        if values.numel():
            stats[kind] = dict(min=values.min().item(), mean=values.mean().item(),
                               max=values.max().item())
    return stats


def run_repopt_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None) -> Dict:
    """Search, extract, train the target; return the summary (module docstring).

    Returns:
        dict: ``hs_top1``, ``target_top1`` (%, on the digits test split, or its quick subset),
        ``scales_file``, ``num_scales``, ``scale_statistics``, checkpoints, timings, ``ok``.
    """
    from rep_mm.datasets import prepare_digits
    from rep_mm.demo import digits_demo_config
    from rep_mm.extract_scales import extract_scales_file
    work_dir = osp.abspath(work_dir)
    data_dir = osp.abspath(data_dir or osp.join(work_dir, 'data', 'digits'))
    started = time.perf_counter()
    digits = prepare_digits(data_dir, size=32, seed=0)

    hs_cfg = digits_demo_config(HS_CONFIG, data_dir, osp.join(work_dir, 'hs'), quick, digits['counts'])
    hs = _train_and_validate(hs_cfg, 'repopt_hs')
    del hs['runner']

    scales_file = osp.join(work_dir, SCALES_NAME)
    extracted = extract_scales_file(hs['checkpoint'], scales_file, str(TARGET_CONFIG),
                                    overwrite=True)

    target_cfg = digits_demo_config(TARGET_CONFIG, data_dir, osp.join(work_dir, 'target'), quick,
                              digits['counts'])
    target_cfg.optim_wrapper.scales = scales_file
    target = _train_and_validate(target_cfg, 'repopt_target')
    optimizer = target.pop('runner').optim_wrapper.optimizer

    summary = dict(
        quick=quick, data_dir=data_dir, hs_config=str(HS_CONFIG),
        target_config=str(TARGET_CONFIG), hs_top1=hs['top1'], target_top1=target['top1'],
        hs=hs, target=target, scales_file=scales_file, num_scales=extracted['num_scales'],
        num_blocks=extracted['num_blocks'], scale_statistics=_scale_statistics(scales_file),
        target_optimizer=type(optimizer).__name__,
        multiplied_kernels=len(getattr(optimizer, 'grad_mult_map', {})))
    summary['ok'] = bool(summary['target_optimizer'] == 'RepOptSGD'
                         and summary['multiplied_kernels'] == summary['num_blocks'])
    summary['total_seconds'] = round(time.perf_counter() - started, 2)
    return summary


def format_repopt_table(summary: Dict) -> str:
    """A short text report of the demo."""
    stats = summary['scale_statistics']
    lines = [f"{'model':<34}{'top-1 (%)':>10}{'train s':>9}",
             f"{'Hyper-Search (hs, SGD)':<34}{summary['hs_top1']:>10.2f}"
             f"{summary['hs']['train_seconds']:>9.1f}",
             f"{'RepOpt-VGG (target, RepOptSGD)':<34}{summary['target_top1']:>10.2f}"
             f"{summary['target']['train_seconds']:>9.1f}",
             f"scales: {summary['num_scales']} tensors of {summary['num_blocks']} blocks -> "
             f"{summary['scales_file']}"]
    lines += [f"  {kind}: min {s['min']:.3f} mean {s['mean']:.3f} max {s['max']:.3f}"
              for kind, s in stats.items()]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m rep_mm.demo_repopt',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_repopt')
    parser.add_argument('--quick', action='store_true', help='a few iterations (for tests)')
    parser.add_argument('--data-dir', default=None,
                        help='digits tree to write or reuse (default WORK_DIR/data/digits)')
    args = parser.parse_args(argv)
    summary = run_repopt_demo(args.work_dir, quick=args.quick, data_dir=args.data_dir)
    path = osp.join(osp.abspath(args.work_dir), SUMMARY_NAME)
    write_json_atomic(summary, path)
    print('\n' + format_repopt_table(summary))
    print(f'summary: {path}')
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
