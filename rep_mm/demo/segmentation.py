"""The segmentation part of the demo: PSPNet-RepVGG learns digit scenes on CPU, then converts.

``python -m rep_mm.demo.segmentation [--work-dir DIR] [--quick] [--iters N]`` runs it alone;
``python -m rep_mm.demo`` (:mod:`rep_mm.demo.run`) calls :func:`run_segmentation_demo`.

1. writes 2,000 train / 200 val digit scenes of 64x64 (:func:`rep_mm.datasets.prepare_digit_scenes`;
   val scenes use digit images unseen in training);
2. trains ``configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py`` with mmengine's
   Runner for ``iters`` iterations (default 1,000; validation evaluates a converted copy through
   ``rep_mm.ReparameterizeHook``);
3. tests the training-form checkpoint twice with fresh Runners: as is, and converted in place by
   the hook before the test loop -- two separate evaluations whose mIoU must be identical;
4. compares the two models' logits on every val scene (max abs / relative difference, pixels
   with the same predicted class) and times both (images/s, median of repeats);
5. draws a few val scenes: input, ground truth, training-time and converted masks
   (``predictions_scenes.png``) (steps 2-5: :func:`rep_mm.demo.compare_forms.run_forms_demo`).

``quick=True`` (for tests): 48 / 16 scenes, 4 iterations at batch 4; only the identity of the
two evaluations is checked, not the mIoU.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

from rep_mm.demo.common import REPO_ROOT, require_config
from rep_mm.demo.compare_forms import FormComparison, FormsDemo, run_forms_demo
from rep_mm.demo.progress import DemoPart
from rep_mm.demo.report import PartReport, Row, form_rows, format_part, report_alone

__all__ = ['run_segmentation_demo', 'format_seg_table', 'segmentation_rows',
           'segmentation_notes', 'segmentation_failure', 'REPORT', 'main', 'DEFAULT_SEG_CONFIG',
           'TARGET_MIOU', 'BACKGROUND_ONLY_MIOU']

DEFAULT_SEG_CONFIG = (REPO_ROOT / 'configs' / 'pspnet' /
                      'pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py')
TARGET_MIOU = 60.0
BACKGROUND_ONLY_MIOU = 8.3  # mIoU of predicting background everywhere on these scenes
FULL_SCENES = dict(num_train=2000, num_val=200)
QUICK_SCENES = dict(num_train=48, num_val=16)
FULL_ITERS, QUICK_ITERS = 1000, 4
SUMMARY_NAME = 'summary_seg.json'
FIGURE_NAME = 'predictions_scenes.png'


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


def _pixel_agreement(logits_train: torch.Tensor, logits_deploy: torch.Tensor,
                     max_abs: float) -> dict:
    """Pixels with the same arg-max class; a pixel whose two best classes are closer than
    twice the logit difference is *tied* (rounding may flip it), every other one *decided*."""
    same = logits_train.argmax(1) == logits_deploy.argmax(1)
    top2 = logits_train.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * max_abs
    return dict(pixels=int(same.numel()), same_pixels=int(same.sum()),
                tied_pixels=int((~decided).sum()),
                differing_decided_pixels=int((~same & decided).sum()))


def _draw_scenes(forms: FormComparison, path: str, caption: str) -> str:
    """The first val scenes: input, ground truth, training-time and converted masks."""
    from rep_mm.demo.plots import SCENES_SHOWN, plot_scene_predictions
    dataset = forms.dataloader.dataset
    samples = [dataset[i] for i in range(min(SCENES_SHOWN, len(dataset)))]
    masks = {form: logits[:len(samples)].argmax(1).numpy()
             for form, logits in forms.logits.items()}
    return plot_scene_predictions(
        [sample['inputs'][0].numpy() for sample in samples],
        [sample['data_samples'].gt_sem_seg.data[0].numpy() for sample in samples],
        masks['train'], masks['deploy'], dataset.metainfo['palette'],
        dataset.metainfo['classes'], path, caption)


FORMS_DEMO = FormsDemo(
    prefix='seg_', metric='mIoU', logits_of=_seg_logits, phase='draw the scenes',
    draw=_draw_scenes, figure_name=FIGURE_NAME,
    caption='PSPNet-RepVGG on held-out digit scenes: {train:.2f} mIoU training-time, '
    '{deploy:.2f} converted')


def _iterations(iters: Optional[int], quick: bool) -> int:
    """``iters``, checked, or the default of the mode."""
    iters = iters if iters is not None else (QUICK_ITERS if quick else FULL_ITERS)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f'iters must be a positive int (training iterations), got {iters!r}')
    return iters


def run_segmentation_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None,
                          config: Path = DEFAULT_SEG_CONFIG, iters: Optional[int] = None,
                          part: Optional[DemoPart] = None) -> dict:
    """Train PSPNet-RepVGG on digit scenes, test both forms, compare, draw; return the summary.

    Args:
        work_dir (str): where data (unless ``data_dir``), checkpoints, logs and the picture go.
        quick (bool): tiny data and 4 iterations; checks identity only. Default False.
        data_dir (str, optional): where the scenes are written / reused.
            Default ``work_dir/data/digit_scenes`` (``..._quick`` in quick mode).
        config (Path): the mmseg digit-scene config. Default :data:`DEFAULT_SEG_CONFIG`.
        iters (int, optional): training iterations. Default 1,000 (4 when quick).
        part (DemoPart, optional): progress and logs. Default ``DemoPart('seg', work_dir)``.

    Returns:
        dict: ``miou`` (train / deploy), ``miou_identical``, ``metrics`` of both runs,
        ``same_pixels`` / ``pixels``, ``tied_pixels`` (top-2 margin within twice the max logit
        difference: their class may flip by rounding) and ``differing_decided_pixels`` (must
        be 0), ``max_abs_logit_diff``, ``max_rel_logit_diff``,
        ``images_per_second`` (train / deploy / batch), ``speedup``, ``params``,
        ``train_seconds``, ``converted_blocks``, ``unconverted_blocks``, ``hook_check``,
        ``target_miou``, ``background_only_miou``, ``figure``, ``log_files`` and ``ok``
        (identical metrics, nothing left unconverted and, in a full run, mIoU >=
        :data:`TARGET_MIOU`).
    """
    import rep_mm  # noqa: F401  (registers rep_mm's modules)
    from rep_mm.datasets import prepare_digit_scenes
    require_config(config, 'segmentation demo config')
    iters = _iterations(iters, quick)
    work_dir = osp.abspath(work_dir)
    scenes = QUICK_SCENES if quick else FULL_SCENES
    data_dir = osp.abspath(data_dir or osp.join(
        work_dir, 'data', 'digit_scenes_quick' if quick else 'digit_scenes'))
    with DemoPart.use(part, 'seg', work_dir) as part:
        part.phase('prepare the digit scenes')
        splits = prepare_digit_scenes(data_dir, size=64, seed=0, **scenes)['splits']
        cfg = _seg_config(Path(config), data_dir, osp.join(work_dir, 'seg_train'), iters, quick)
        run = run_forms_demo(FORMS_DEMO, part, cfg, work_dir,
                             (scenes['num_train'], scenes['num_val']), quick)
        metrics = run.forms.metrics
        summary = dict(
            quick=quick, config=str(config), data_dir=data_dir, iters=iters,
            train_scenes=splits['train']['scenes'], val_scenes=splits['val']['scenes'],
            miou=run.values, metrics=metrics, miou_identical=metrics['train'] == metrics['deploy'],
            checkpoint=run.checkpoint, target_miou=TARGET_MIOU,
            background_only_miou=BACKGROUND_ONLY_MIOU, **run.summary(),
            **_pixel_agreement(run.forms.logits['train'], run.forms.logits['deploy'],
                               run.forms.summary['max_abs_logit_diff']))
    return part.finish(summary, summary['miou_identical'] and summary['unconverted_blocks'] == 0
                       and (quick or run.values['deploy'] >= TARGET_MIOU))


def segmentation_rows(summary: dict) -> List[Row]:
    """The segmentation part's rows of the closing table."""
    miou = summary['miou']
    return [
        ('segmentation', f"PSPNet + RepVGG tiny, {summary['converted_blocks']} blocks",
         f"{miou['train']:.2f} mIoU", f"{miou['deploy']:.2f} mIoU"),
        *form_rows(summary, f"{summary['val_scenes']} test scenes",
                   f"{summary['iters']:,} iters"),
        ('', 'pixels with the same class', '',
         f"{summary['same_pixels']:,} / {summary['pixels']:,}"),
    ]


def segmentation_notes(summary: dict) -> List[str]:
    """Closing line of the segmentation part."""
    return [f"segmentation: {summary['train_scenes']:,} training scenes of 64x64; background "
            f"everywhere scores {summary['background_only_miou']} mIoU; "
            f"{summary['unconverted_blocks']} blocks left unconverted"]


def segmentation_failure(summary: dict, quick: bool) -> str:
    """Why the segmentation part failed (its summary's ``ok`` is False)."""
    reasons = [('the mIoU of the two forms differ', not summary['miou_identical']),
               (f"{summary['unconverted_blocks']} block(s) left unconverted",
                summary['unconverted_blocks']),
               (f"mIoU below {summary['target_miou']}",
                not quick and summary['miou']['deploy'] < summary['target_miou'])]
    return '; '.join(reason for reason, failed in reasons if failed)


REPORT = PartReport('segmentation', SUMMARY_NAME, segmentation_rows, segmentation_notes,
                    segmentation_failure)


def format_seg_table(summary: dict) -> str:
    """The segmentation part alone: its rows of the closing table and its notes."""
    return format_part(REPORT, summary)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rep_mm.demo.segmentation``: run, print the table, write ``summary_seg.json``."""
    parser = argparse.ArgumentParser(prog='python -m rep_mm.demo.segmentation',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_seg', help='output directory')
    parser.add_argument('--quick', action='store_true', help='tiny run (identity check only)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations')
    args = parser.parse_args(argv)
    summary = run_segmentation_demo(args.work_dir, quick=args.quick, iters=args.iters)
    return report_alone(REPORT, summary, args.work_dir, args.quick)


if __name__ == '__main__':
    sys.exit(main())
