"""The RepOptimizer part of the demo on real digits: Hyper-Search -> scales file -> RepOpt-VGG.

``python -m rep_mm.demo.repopt [--work-dir DIR] [--quick]`` runs it alone;
``python -m rep_mm.demo`` (:mod:`rep_mm.demo.run`) calls :func:`run_repopt_demo`:

1. writes scikit-learn's digits as a 32x32 image folder tree
   (:func:`rep_mm.datasets.prepare_digits`);
2. trains ``configs/repopt/repoptvgg-tiny-hs_1xb32_digits.py`` (a tiny RepOpt-VGG with
   trainable branch scales, plain SGD) with mmengine's Runner and evaluates it;
3. extracts the searched scales from its last checkpoint into ``WORK_DIR/scales.pth``, matched by
   name to the target model (:func:`rep_mm.cli.extract_scales.extract_scales_file`);
4. trains ``configs/repopt/repoptvgg-tiny-target_1xb32_digits.py`` (the same arch as a plain
   conv3x3 + BN VGG) with RepOptSGD from those scales (RepOptInitHook re-initialises it) and
   evaluates it; writes ``WORK_DIR/repopt_summary.json``.

``--quick`` trains each model for 8 iterations on 64 images and tests on 128 (seconds).
Progress and logs as in the other parts (:class:`rep_mm.demo.progress.DemoPart`).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import torch

from rep_mm.demo.common import REPO_ROOT, digits_demo_config, prepare_demo_digits
from rep_mm.demo.compare_forms import train_to_checkpoint
from rep_mm.demo.progress import DemoPart, planned_iterations
from rep_mm.demo.report import (PartReport, Row, format_part, format_seconds, report_alone,
                                short_path)

__all__ = ['run_repopt_demo', 'format_repopt_table', 'repopt_rows', 'repopt_notes',
           'repopt_failure', 'REPORT', 'main', 'HS_CONFIG', 'TARGET_CONFIG', 'SUMMARY_NAME',
           'SCALES_NAME']

HS_CONFIG = REPO_ROOT / 'configs' / 'repopt' / 'repoptvgg-tiny-hs_1xb32_digits.py'
TARGET_CONFIG = REPO_ROOT / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'
SUMMARY_NAME = 'repopt_summary.json'
SCALES_NAME = 'scales.pth'


def _train_and_validate(cfg, name: str, part: Optional[DemoPart] = None,
                        label: str = 'train') -> Dict:
    """Train with a fresh Runner of ``part`` (default: a new part named ``name`` in the
    config's work dir), then run its validation loop: top-1, seconds, checkpoint, runner."""
    with DemoPart.use(part, name, cfg.work_dir) as part:
        runner, seconds, checkpoint = train_to_checkpoint(part, cfg, name, label)
        metrics = runner.val()
    return dict(top1=float(metrics['accuracy/top1']), train_seconds=round(seconds, 2),
                checkpoint=checkpoint, iterations=int(runner.iter), runner=runner)


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


def run_repopt_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None,
                    part: Optional[DemoPart] = None) -> Dict:
    """Search, extract, train the target; return the summary (module docstring).

    Returns:
        dict: ``hs_top1``, ``target_top1`` (%, on the digits test split, or its quick subset),
        ``scales_file``, ``num_scales``, ``scale_statistics``, checkpoints, timings,
        ``log_files``, ``ok``.
    """
    from rep_mm.cli.extract_scales import extract_scales_file
    work_dir = osp.abspath(work_dir)
    data_dir = osp.abspath(data_dir or osp.join(work_dir, 'data', 'digits'))
    scales_file = osp.join(work_dir, SCALES_NAME)
    with DemoPart.use(part, 'repopt', work_dir) as part:
        part.phase('prepare the digits')
        counts, images = prepare_demo_digits(data_dir, quick)
        hs_cfg, target_cfg = (digits_demo_config(config, data_dir, osp.join(work_dir, sub),
                                                 quick, counts)
                              for config, sub in ((HS_CONFIG, 'hs'), (TARGET_CONFIG, 'target')))
        target_cfg.optim_wrapper.scales = scales_file
        part.plan(sum(planned_iterations(cfg, *images, extra_vals=1)
                      for cfg in (hs_cfg, target_cfg)))
        hs = _train_and_validate(hs_cfg, 'repopt_hs', part, 'Hyper-Search')
        del hs['runner']
        part.phase('extract the scales')
        extracted = extract_scales_file(hs['checkpoint'], scales_file, str(TARGET_CONFIG),
                                        overwrite=True)
        target = _train_and_validate(target_cfg, 'repopt_target', part, 'target (RepOptSGD)')
        optimizer = target.pop('runner').optim_wrapper.optimizer
    summary = dict(
        quick=quick, data_dir=data_dir, hs_config=str(HS_CONFIG),
        target_config=str(TARGET_CONFIG), hs_top1=hs['top1'], target_top1=target['top1'],
        hs=hs, target=target, scales_file=scales_file, num_scales=extracted['num_scales'],
        num_blocks=extracted['num_blocks'], scale_statistics=_scale_statistics(scales_file),
        target_optimizer=type(optimizer).__name__,
        multiplied_kernels=len(getattr(optimizer, 'grad_mult_map', {})))
    return part.finish(summary, summary['target_optimizer'] == 'RepOptSGD'
                       and summary['multiplied_kernels'] == summary['num_blocks'])


def repopt_rows(summary: Dict) -> List[Row]:
    """The RepOptimizer part's rows of the closing table (the target deploys as it trained)."""
    return [('RepOptimizer', f"Hyper-Search model (SGD) -> {summary['num_scales']} scales",
             f"{summary['hs_top1']:.2f} % top-1", '-'),
            (f"digits, {format_seconds(summary['total_seconds'])}",
             f"RepOpt-VGG target ({summary['target_optimizer']})",
             f"{summary['target_top1']:.2f} % top-1", 'deploys as is')]


def repopt_notes(summary: Dict) -> List[str]:
    """Closing line of the RepOptimizer part: the scales file and its statistics."""
    means = ', '.join(f"{kind.replace('scale_', '')} {stats['mean']:.3f}"
                      for kind, stats in summary['scale_statistics'].items())
    return [f"RepOptimizer: scales of {summary['num_blocks']} blocks in "
            f"{short_path(summary['scales_file'])} (means: {means})"]


def repopt_failure(summary: Dict, quick: bool) -> str:
    """Why the RepOptimizer part failed (its summary's ``ok`` is False)."""
    return (f"the target trained with {summary['target_optimizer']} and "
            f"{summary['multiplied_kernels']} grad-multiplied kernels; expected RepOptSGD on "
            f"all {summary['num_blocks']} blocks")


REPORT = PartReport('RepOptimizer', SUMMARY_NAME, repopt_rows, repopt_notes, repopt_failure)


def format_repopt_table(summary: Dict) -> str:
    """The RepOptimizer part alone: its rows of the closing table and its notes."""
    return format_part(REPORT, summary)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rep_mm.demo.repopt``: run, print the table, write ``repopt_summary.json``."""
    parser = argparse.ArgumentParser(prog='python -m rep_mm.demo.repopt',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_repopt')
    parser.add_argument('--quick', action='store_true', help='a few iterations (for tests)')
    parser.add_argument('--data-dir', default=None,
                        help='digits tree to write or reuse (default WORK_DIR/data/digits)')
    args = parser.parse_args(argv)
    summary = run_repopt_demo(args.work_dir, quick=args.quick, data_dir=args.data_dir)
    return report_alone(REPORT, summary, args.work_dir, args.quick)


if __name__ == '__main__':
    sys.exit(main())
