"""The segmentation part of the demo: PSPNet-RepVGG learns digit scenes on CPU, then converts.

``python -m rep_mm.demo_seg [--work-dir DIR] [--quick] [--iters N]``; the main demo calls
:func:`run_segmentation_demo`.

1. writes 2,000 train / 200 val digit scenes of 64x64 (:func:`rep_mm.datasets.prepare_digit_scenes`;
   val scenes use digit images unseen in training);
2. trains ``configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py`` with mmengine's
   Runner for ``iters`` iterations (default 1,000; validation evaluates a converted copy through
   ``rep_mm.ReparameterizeHook``);
3. tests the training-form checkpoint twice with fresh Runners: as is, and converted in place by
   the hook before the test loop -- two separate evaluations whose mIoU must be identical;
4. compares the two models' logits on every val scene (max abs / relative difference, pixels
   with the same predicted class) and times both (images/s, median of repeats).

``quick=True`` (for tests): 48 / 16 scenes, 4 iterations at batch 4; only the identity of the
two evaluations is checked, not the mIoU.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from rep_mm.demo_utils import (build_runner, count_parameters, evaluate_checkpoint,
                               leftover_training_blocks, median_throughput, side_by_side,
                               unwrap_model, write_json_atomic)

__all__ = ['run_segmentation_demo', 'format_seg_table', 'main', 'DEFAULT_SEG_CONFIG',
           'TARGET_MIOU', 'BACKGROUND_ONLY_MIOU']

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEG_CONFIG = (REPO_ROOT / 'configs' / 'pspnet' /
                      'pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py')
TARGET_MIOU = 60.0
BACKGROUND_ONLY_MIOU = 8.3  # mIoU of predicting background everywhere on these scenes
FULL_SCENES = dict(num_train=2000, num_val=200)
QUICK_SCENES = dict(num_train=48, num_val=16)
FULL_ITERS, QUICK_ITERS = 1000, 4
SUMMARY_NAME = 'summary_seg.json'


def _seg_config(config: Path, data_root: str, work_dir: str, iters: int, quick: bool):
    """The digit-scene config pointed at ``data_root``, with its schedule fitted to ``iters``."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    cfg.data_root = data_root
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key]['dataset']['data_root'] = data_root
    cfg.work_dir, cfg.launcher = work_dir, 'none'
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    schedulers = []
    for scheduler in cfg.param_scheduler:  # warmup stays; the decay ends with training
        if scheduler.get('end', 0) > iters or scheduler.get('type') == 'PolyLR':
            scheduler['end'] = iters
        if scheduler.get('begin', 0) < scheduler['end']:  # a very short run drops the decay
            schedulers.append(scheduler)
    cfg.param_scheduler = schedulers
    if quick:
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[key]['batch_size'] = 4
        cfg.default_hooks.logger.interval = 1
    return cfg


def _test(cfg, checkpoint: str, work_dir: str, name: str, deploy: bool):
    """``(metrics, runner)`` of a fresh Runner testing ``checkpoint`` (converted if ``deploy``)."""
    return evaluate_checkpoint(cfg, checkpoint, work_dir, name, deploy)


@torch.no_grad()
def _seg_logits(model: nn.Module, dataloader) -> torch.Tensor:
    """Per-pixel class logits on every batch, concatenated (eval mode).

    The decode head's output (``mode='tensor'``, at its output stride) is resized bilinearly
    to the input size, as mmseg does before taking the arg-max.
    """
    from torch.nn import functional as F
    model.eval()
    outputs = []
    for data in dataloader:
        inputs = model.data_preprocessor(data, False)['inputs']
        logits = model(inputs, mode='tensor')
        outputs.append(F.interpolate(logits, size=inputs.shape[2:], mode='bilinear',
                                     align_corners=False))
    return torch.cat(outputs)


def run_segmentation_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None,
                          config: Path = DEFAULT_SEG_CONFIG, iters: Optional[int] = None) -> dict:
    """Train PSPNet-RepVGG on digit scenes, test both forms, compare; return the summary.

    Args:
        work_dir (str): where data (unless ``data_dir``), checkpoints and logs go.
        quick (bool): tiny data and 4 iterations; checks identity only. Default False.
        data_dir (str, optional): where the scenes are written / reused.
            Default ``work_dir/data/digit_scenes`` (``..._quick`` in quick mode).
        config (Path): the mmseg digit-scene config. Default :data:`DEFAULT_SEG_CONFIG`.
        iters (int, optional): training iterations. Default 1,000 (4 when quick).

    Returns:
        dict: ``miou`` (train / deploy), ``miou_identical``, ``metrics`` of both runs,
        ``same_pixels`` / ``pixels``, ``tied_pixels`` (top-2 margin within twice the max logit
        difference: their class may flip by rounding) and ``differing_decided_pixels`` (must
        be 0), ``max_abs_logit_diff``, ``max_rel_logit_diff``,
        ``images_per_second`` (train / deploy / batch), ``speedup``, ``params``,
        ``train_seconds``, ``converted_blocks``, ``unconverted_blocks``, ``hook_check``,
        ``target_miou``, ``background_only_miou`` and ``ok`` (identical metrics, nothing left
        unconverted and, in a full run, mIoU >= :data:`TARGET_MIOU`).
    """
    import rep_mm  # noqa: F401  (registers rep_mm's modules)
    from rep_mm.datasets import prepare_digit_scenes
    from rep_mm.checkpoint import runner_allow_list
    if not Path(config).is_file():
        raise FileNotFoundError(f'segmentation demo config {config} not found; the demo runs '
                                'from a source checkout of rep_mm (pip install -e .)')
    iters = iters if iters is not None else (QUICK_ITERS if quick else FULL_ITERS)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f'iters must be a positive int (training iterations), got {iters!r}')
    work_dir = osp.abspath(work_dir)
    scenes = QUICK_SCENES if quick else FULL_SCENES
    data_dir = osp.abspath(data_dir or osp.join(
        work_dir, 'data', 'digit_scenes_quick' if quick else 'digit_scenes'))
    started = time.perf_counter()
    manifest = prepare_digit_scenes(data_dir, size=64, seed=0, **scenes)

    cfg = _seg_config(Path(config), data_dir, osp.join(work_dir, 'seg_train'), iters, quick)
    train_runner = build_runner(cfg, 'demo_seg_train')
    train_started = time.perf_counter()
    with runner_allow_list():
        train_runner.train()
    train_seconds = time.perf_counter() - train_started
    checkpoint = osp.join(cfg.work_dir, f'iter_{iters}.pth')
    del train_runner

    metrics_train, train_test_runner = _test(cfg, checkpoint, osp.join(work_dir, 'seg_test_train'),
                                             'demo_seg_test_train', deploy=False)
    metrics_deploy, deploy_test_runner = _test(
        cfg, checkpoint, osp.join(work_dir, 'seg_test_deploy'), 'demo_seg_test_deploy',
        deploy=True)
    train_model = unwrap_model(train_test_runner.model)
    deploy_model = unwrap_model(deploy_test_runner.model)
    hook = next(h for h in deploy_test_runner.hooks if type(h).__name__ == 'ReparameterizeHook')
    dataloader = deploy_test_runner.test_loop.dataloader

    logits_train = _seg_logits(train_model, dataloader)
    logits_deploy = _seg_logits(deploy_model, dataloader)
    max_abs = (logits_train - logits_deploy).abs().max().item()
    same = logits_train.argmax(1) == logits_deploy.argmax(1)
    # a pixel whose two best classes are closer than the logit difference may flip by rounding
    top2 = logits_train.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * max_abs
    same_pixels = int(same.sum())
    batch = next(iter(dataloader))
    inputs = deploy_model.data_preprocessor(batch, False)['inputs']
    rates = median_throughput({'train': train_model, 'deploy': deploy_model}, inputs,
                        repeats=3 if quick else 7, passes=1 if quick else 5)
    leftovers = leftover_training_blocks(deploy_model)
    summary = dict(
        quick=quick, config=str(config), data_dir=data_dir, iters=iters,
        train_scenes=manifest['splits']['train']['scenes'],
        val_scenes=manifest['splits']['val']['scenes'],
        train_seconds=round(train_seconds, 2),
        miou=dict(train=metrics_train['mIoU'], deploy=metrics_deploy['mIoU']),
        metrics=dict(train=metrics_train, deploy=metrics_deploy),
        miou_identical=metrics_train == metrics_deploy,
        pixels=int(logits_train.argmax(1).numel()), same_pixels=same_pixels,
        tied_pixels=int((~decided).sum()), differing_decided_pixels=int((~same & decided).sum()),
        max_abs_logit_diff=max_abs,
        max_rel_logit_diff=max_abs / logits_train.abs().max().item(),
        images_per_second=dict(train=rates['train'], deploy=rates['deploy'],
                               batch=int(len(inputs))),
        speedup=rates['deploy'] / rates['train'],
        params=dict(train=count_parameters(train_model), deploy=count_parameters(deploy_model)),
        converted_blocks=len(hook.last_report.converted) if hook.last_report else 0,
        hook_check=hook.last_check, checkpoint=checkpoint,
        target_miou=TARGET_MIOU, background_only_miou=BACKGROUND_ONLY_MIOU, **leftovers)
    summary['ok'] = bool(summary['miou_identical'] and leftovers['unconverted_blocks'] == 0
                         and (quick or summary['miou']['deploy'] >= TARGET_MIOU))
    summary['total_seconds'] = round(time.perf_counter() - started, 2)
    return summary


def format_seg_table(summary: dict) -> str:
    """Side-by-side table of the training-time and the converted segmentation model."""
    rate = summary['images_per_second']
    rows = [('mIoU (%)', f"{summary['miou']['train']:.2f}", f"{summary['miou']['deploy']:.2f}"),
            (f"throughput (img/s, batch {rate['batch']})", f"{rate['train']:.0f}",
             f"{rate['deploy']:.0f}"),
            ('parameters', f"{summary['params']['train']:,}", f"{summary['params']['deploy']:,}")]
    lines = side_by_side(rows) + [
        f"PSPNet-RepVGG on {summary['val_scenes']} held-out digit scenes after "
        f"{summary['iters']} iterations ({summary['train_seconds']:.0f} s); all-background "
        f"baseline mIoU {summary['background_only_miou']}",
        f"max |logit difference| {summary['max_abs_logit_diff']:.3g} (relative "
        f"{summary['max_rel_logit_diff']:.3g}); same class on {summary['same_pixels']}/"
        f"{summary['pixels']} pixels; speed-up {summary['speedup']:.2f}x; blocks converted "
        f"{summary['converted_blocks']}, left unconverted {summary['unconverted_blocks']}",
    ]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rep_mm.demo_seg``: run, print the table, write ``summary_seg.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_seg', help='output directory')
    parser.add_argument('--quick', action='store_true', help='tiny run (identity check only)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations')
    args = parser.parse_args(argv)
    summary = run_segmentation_demo(args.work_dir, quick=args.quick, iters=args.iters)
    write_json_atomic(summary, osp.join(osp.abspath(args.work_dir), SUMMARY_NAME))
    print(format_seg_table(summary))
    print(json.dumps(dict(ok=summary['ok'], miou=summary['miou']), sort_keys=True))
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
