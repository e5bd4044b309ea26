"""The rep_mm demo: train a small RepVGG on real digits, convert it, show that nothing changed.

``python -m rep_mm.demo [--work-dir DIR] [--quick]`` (also ``rep-mm demo``):

1. writes scikit-learn's 1,797 handwritten digits as a 32x32 image folder tree
   (1,437 train / 360 test, :func:`rep_mm.datasets.prepare_digits`);
2. trains ``configs/repvgg/repvgg-tiny_1xb32_digits.py`` with mmengine's Runner (validation
   evaluates a converted copy through ``rep_mm.ReparameterizeHook``);
3. tests the saved training-form checkpoint twice with fresh Runners: once as is, once with the
   hook converting the model in place before the test loop;
4. compares the two models on all test images (max abs logit difference, agreeing predictions),
   times them side by side (images/s, median of repeats), counts parameters and left-over
   training-time blocks;
5. saves the converted checkpoint atomically, reloads it strictly into a ``deploy=True`` model,
   prints a table and writes ``summary.json``;
6. then the segmentation part (:mod:`rep_mm.demo_seg`): PSPNet with a RepVGG backbone learns
   generated digit scenes, is tested in both forms, writes ``summary_seg.json``;
7. then the RepOptimizer part (:mod:`rep_mm.demo_repopt`): a Hyper-Search run, its scales
   extracted, a plain RepOpt-VGG trained with RepOptSGD from them (``repopt_summary.json``).
   ``--parts cls,seg`` (etc.) runs a subset.

The exit status is 0 when, in every part run, the two accuracies are identical, no block is left unconverted, the
reloaded checkpoint reproduces the converted model and (full run) top-1 >= 90%.
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from rep_mm.demo_utils import (build_runner, count_parameters, evaluate_checkpoint,
                               leftover_training_blocks, median_throughput, side_by_side,
                               unwrap_model, write_json_atomic)

__all__ = ['run_classification_demo', 'digits_demo_config', 'main', 'DEFAULT_CONFIG',
           'TARGET_TOP1']

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
TARGET_TOP1 = 90.0
QUICK_TRAIN_IMAGES = 64  # --quick: 2 iterations per epoch at batch 32
QUICK_TEST_IMAGES = 128  # --quick: 2 test batches of 64
CHECKPOINT_NAME = 'repvgg-tiny_digits_deploy.pth'
SUMMARY_NAME = 'summary.json'


# ------------------------------------------------------------------------------- the runs
def _spread(total: int, count: int) -> List[int]:
    """``count`` indices spread evenly over ``range(total)`` (the folder tree is class-sorted,
    so this takes every class, unlike the first ``count``)."""
    count = min(count, total)
    return [i * total // count for i in range(count)]


def digits_demo_config(config: Path, data_root: str, work_dir: str, quick: bool,
                       counts: dict):
    """The digits config pointed at ``data_root`` (and shrunk for ``quick``)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key]['dataset']['data_root'] = data_root
    cfg.data_root = data_root
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    if quick:
        cfg.train_dataloader.dataset.indices = _spread(counts['train'], QUICK_TRAIN_IMAGES)
        for key in ('val_dataloader', 'test_dataloader'):
            cfg[key]['dataset']['indices'] = _spread(counts['test'], QUICK_TEST_IMAGES)
        cfg.default_hooks.logger.interval = 1
    return cfg


def _test(cfg, checkpoint: str, work_dir: str, name: str, deploy: bool):
    """``(top-1, runner)`` of a fresh Runner testing ``checkpoint`` (converted if ``deploy``)."""
    return evaluate_checkpoint(cfg, checkpoint, work_dir, name, deploy, metric='accuracy/top1')


# ------------------------------------------------------------------------- measurements
@torch.no_grad()
def _logits(model: nn.Module, dataloader) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on every batch of ``dataloader``, concatenated."""
    model.eval()
    outputs = []
    for data in dataloader:
        data = model.data_preprocessor(data, False)
        outputs.append(model(data['inputs'], mode='tensor'))
    return torch.cat(outputs)


def _save_and_reload(deploy_model: nn.Module, cfg, path: str, meta: dict,
                     reference: torch.Tensor, dataloader) -> float:
    """Save the converted weights atomically; rebuild with deploy=True, load strictly, compare."""
    from mmengine.registry import MODELS, init_default_scope

    from rep_mm.checkpoint import load_checkpoint_file, save_checkpoint_atomic
    save_checkpoint_atomic({'state_dict': deploy_model.state_dict(), 'meta': meta}, path,
                           overwrite=True)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.deploy = True
    if cfg.get('data_preprocessor') is not None:  # what the Runner merges into the model
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    rebuilt = MODELS.build(model_cfg)
    rebuilt.load_state_dict(load_checkpoint_file(path)['state_dict'], strict=True)
    return (_logits(rebuilt, dataloader) - reference).abs().max().item()


def run_classification_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None,
                            config: Path = DEFAULT_CONFIG) -> dict:
    """Train, test in both forms, compare, save; return the summary (see module docstring)."""
    import rep_mm
    from rep_mm.datasets import prepare_digits
    if not Path(config).is_file():
        raise FileNotFoundError(f'demo config {config} not found; the demo runs from a source '
                                f'checkout of rep_mm (pip install -e .) or give --config')
    work_dir = osp.abspath(work_dir)
    data_dir = osp.abspath(data_dir or osp.join(work_dir, 'data', 'digits'))
    started = time.perf_counter()
    digits = prepare_digits(data_dir, size=32, seed=0)

    cfg = digits_demo_config(Path(config), data_dir, osp.join(work_dir, 'train'), quick,
                             digits['counts'])
    train_runner = build_runner(cfg, 'demo_train')
    train_started = time.perf_counter()
    train_runner.train()
    train_seconds = time.perf_counter() - train_started
    checkpoint = osp.join(cfg.work_dir, f'epoch_{train_runner.max_epochs}.pth')
    del train_runner

    top1_train, train_test_runner = _test(cfg, checkpoint, osp.join(work_dir, 'test_train'),
                                          'demo_test_train', deploy=False)
    top1_deploy, deploy_test_runner = _test(cfg, checkpoint, osp.join(work_dir, 'test_deploy'),
                                            'demo_test_deploy', deploy=True)
    train_model = unwrap_model(train_test_runner.model)
    deploy_model = unwrap_model(deploy_test_runner.model)
    hook = next(h for h in deploy_test_runner.hooks if type(h).__name__ == 'ReparameterizeHook')
    dataloader = deploy_test_runner.test_loop.dataloader

    logits_train, logits_deploy = _logits(train_model, dataloader), _logits(deploy_model,
                                                                            dataloader)
    max_abs = (logits_train - logits_deploy).abs().max().item()
    max_rel = max_abs / logits_train.abs().max().item()
    same_predictions = int((logits_train.argmax(1) == logits_deploy.argmax(1)).sum())

    batch = next(iter(dataloader))
    inputs = deploy_model.data_preprocessor(batch, False)['inputs']
    rates = median_throughput({'train': train_model, 'deploy': deploy_model}, inputs,
                        repeats=3 if quick else 7, passes=1 if quick else 5)

    out_path = osp.join(work_dir, CHECKPOINT_NAME)
    meta = dict(config=str(config), source_checkpoint=checkpoint, deploy=True,
                top1=top1_deploy, rep_mm_version=rep_mm.__version__, quick=quick)
    reload_max_abs = _save_and_reload(deploy_model, cfg, out_path, meta, logits_deploy,
                                      dataloader)
    leftovers = leftover_training_blocks(deploy_model)
    summary = dict(
        quick=quick, config=str(config), data_dir=data_dir,
        train_images=(QUICK_TRAIN_IMAGES if quick else digits['counts']['train']),
        test_images=int(len(logits_train)), epochs=int(cfg.train_cfg.max_epochs),
        train_seconds=round(train_seconds, 2),
        top1=dict(train=top1_train, deploy=top1_deploy),
        top1_identical=top1_train == top1_deploy,
        same_predictions=same_predictions,
        images_per_second=dict(train=rates['train'], deploy=rates['deploy'],
                               batch=int(len(inputs))),
        speedup=rates['deploy'] / rates['train'],
        params=dict(train=count_parameters(train_model), deploy=count_parameters(deploy_model)),
        max_abs_logit_diff=max_abs, max_rel_logit_diff=max_rel,
        converted_blocks=len(hook.last_report.converted) if hook.last_report else 0,
        hook_check=hook.last_check,
        reload_max_abs_diff=reload_max_abs,
        checkpoint=out_path, train_checkpoint=checkpoint,
        target_top1=TARGET_TOP1, total_seconds=None, **leftovers)
    summary['ok'] = bool(summary['top1_identical'] and leftovers['unconverted_blocks'] == 0
                         and reload_max_abs == 0.0
                         and (quick or top1_deploy >= TARGET_TOP1))
    summary['total_seconds'] = round(time.perf_counter() - started, 2)
    return summary


# ------------------------------------------------------------------------------- output
def format_table(summary: dict) -> str:
    """The final side-by-side table of the training-time and the converted model."""
    rows = [
        ('top-1 accuracy (%)', f"{summary['top1']['train']:.2f}",
         f"{summary['top1']['deploy']:.2f}"),
        (f"throughput (img/s, batch {summary['images_per_second']['batch']})",
         f"{summary['images_per_second']['train']:.0f}",
         f"{summary['images_per_second']['deploy']:.0f}"),
        ('parameters', f"{summary['params']['train']:,}", f"{summary['params']['deploy']:,}"),
    ]
    lines = side_by_side(rows) + [
        f"max |logit difference| on {summary['test_images']} test images: "
        f"{summary['max_abs_logit_diff']:.3g} (relative {summary['max_rel_logit_diff']:.3g}); "
        f"same prediction on {summary['same_predictions']}/{summary['test_images']}",
        f"speed-up {summary['speedup']:.2f}x; blocks converted {summary['converted_blocks']}, "
        f"left unconverted {summary['unconverted_blocks']}",
        f"converted checkpoint: {summary['checkpoint']} (reloaded strictly into a deploy=True "
        f"model: max diff {summary['reload_max_abs_diff']:.3g})",
    ]
    return '\n'.join(lines)


PARTS = ('cls', 'seg', 'repopt')


def _classification_failure(summary: dict, quick: bool) -> str:
    return ('accuracies differ; ' if not summary['top1_identical'] else '') + (
        f"{summary['unconverted_blocks']} block(s) unconverted; "
        if summary['unconverted_blocks'] else '') + (
        'reloaded checkpoint differs; ' if summary['reload_max_abs_diff'] else '') + (
        f'top-1 below {TARGET_TOP1}%' if not quick
        and summary['top1']['deploy'] < TARGET_TOP1 else '')


def _run_part(part: str, work_dir: str, args: argparse.Namespace) -> Tuple[str, dict, str, str]:
    """Run one part of the demo: ``(summary file name, summary, table, failure message)``."""
    if part == 'cls':
        summary = run_classification_demo(work_dir, quick=args.quick, data_dir=args.data_dir,
                                          config=Path(args.config))
        return (SUMMARY_NAME, summary, format_table(summary),
                'classification: ' + _classification_failure(summary, args.quick))
    if part == 'seg':
        from rep_mm import demo_seg
        summary = demo_seg.run_segmentation_demo(work_dir, quick=args.quick)
        return (demo_seg.SUMMARY_NAME, summary, demo_seg.format_seg_table(summary),
                'segmentation: mIoU of the two forms differ, blocks left unconverted or mIoU '
                f"below {summary['target_miou']}")
    from rep_mm import demo_repopt
    summary = demo_repopt.run_repopt_demo(work_dir, quick=args.quick, data_dir=args.data_dir)
    return (demo_repopt.SUMMARY_NAME, summary, demo_repopt.format_repopt_table(summary),
            'repopt: the target model did not train with RepOptSGD grad mults on every block')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of the demo; returns the exit status (0 when every part passed)."""
    parser = argparse.ArgumentParser(prog='python -m rep_mm.demo',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='outputs: logs, checkpoints, summary.json (default work_dirs/demo)')
    parser.add_argument('--quick', action='store_true',
                        help=f'train on {QUICK_TRAIN_IMAGES} images, test on {QUICK_TEST_IMAGES} '
                        f'(seconds; for tests)')
    parser.add_argument('--data-dir', default=None,
                        help='digits tree to write or reuse (default WORK_DIR/data/digits)')
    parser.add_argument('--config', default=str(DEFAULT_CONFIG),
                        help='mmpretrain config to train (default: the digits RepVGG config)')
    parser.add_argument('--parts', default=','.join(PARTS),
                        help='comma-separated parts to run: cls (RepVGG classification on digits), '
                        'seg (PSPNet-RepVGG on digit scenes; rep_mm.demo_seg), repopt (Hyper-Search '
                        '-> scales -> RepOpt-VGG with RepOptSGD; rep_mm.demo_repopt). '
                        'Default: all three')
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(',') if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown part(s) {unknown or args.parts!r}; allowed: {', '.join(PARTS)}")
    work_dir = osp.abspath(args.work_dir)
    failures = []
    for part in parts:
        summary_name, summary, table, failure = _run_part(part, work_dir, args)
        path = osp.join(work_dir, summary_name)
        write_json_atomic(summary, path)
        print('\n' + table)
        print(f'summary: {path}')
        if not summary['ok']:
            failures.append(failure)
    for failure in failures:
        print('DEMO FAILED: ' + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
