"""The classification part of the demo: a small RepVGG learns real digits, converts, and
predicts exactly as before.

:func:`run_classification_demo` (run by ``python -m rep_mm.demo``, :mod:`rep_mm.demo.run`):

1. writes scikit-learn's 1,797 handwritten digits as a 32x32 image folder tree
   (1,437 train / 360 test, :func:`rep_mm.datasets.prepare_digits`);
2. trains ``configs/repvgg/repvgg-tiny_1xb32_digits.py`` with mmengine's Runner (validation
   evaluates a converted copy through ``rep_mm.ReparameterizeHook``);
3. tests the saved training-form checkpoint twice with fresh Runners: once as is, once with the
   hook converting the model in place before the test loop;
4. compares the two models on all test images (max abs logit difference, agreeing predictions),
   times them side by side (images/s, median of repeats), counts parameters and left-over
   training-time blocks (steps 2-4: :func:`rep_mm.demo.compare_forms.run_forms_demo`);
5. draws held-out digits with both forms' predictions (``predictions_digits.png``), saves the
   converted checkpoint atomically and reloads it strictly into a ``deploy=True`` model.

The part passes when the two accuracies are identical, no block is left unconverted, the
reloaded checkpoint reproduces the converted model and (full run) top-1 >= 90%.
"""
from __future__ import annotations

import copy
import os.path as osp
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from rep_mm.demo.common import (QUICK_TEST_IMAGES, QUICK_TRAIN_IMAGES, REPO_ROOT,
                                digits_demo_config, prepare_demo_digits, require_config)
from rep_mm.demo.compare_forms import FormComparison, FormsDemo, run_forms_demo
from rep_mm.demo.progress import DemoPart
from rep_mm.demo.report import PartReport, Row, form_rows, format_part, short_path

__all__ = ['run_classification_demo', 'digits_demo_config', 'classification_rows',
           'classification_notes', 'classification_failure', 'format_table', 'REPORT',
           'DEFAULT_CONFIG', 'TARGET_TOP1', 'SUMMARY_NAME', 'QUICK_TRAIN_IMAGES',
           'QUICK_TEST_IMAGES']

DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
TARGET_TOP1 = 90.0
CHECKPOINT_NAME = 'repvgg-tiny_digits_deploy.pth'
SUMMARY_NAME = 'summary.json'
FIGURE_NAME = 'predictions_digits.png'


@torch.no_grad()
def _logits(model: nn.Module, dataloader) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on every batch of ``dataloader``, concatenated."""
    model.eval()
    outputs = []
    for data in dataloader:
        data = model.data_preprocessor(data, False)
        outputs.append(model(data['inputs'], mode='tensor'))
    return torch.cat(outputs)


def _save_and_reload(forms: FormComparison, cfg, path: str, meta: dict) -> float:
    """Save the converted weights atomically; rebuild with deploy=True, load strictly, return
    the max abs logit difference to the converted model."""
    from rep_mm.integrations import build_model
    from rep_mm.io import load_checkpoint_file, save_checkpoint_atomic
    save_checkpoint_atomic({'state_dict': forms.models['deploy'].state_dict(), 'meta': dict(meta, rep_mm_form='deploy')},
                           path, overwrite=True)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.deploy = True
    # with the config's data_preprocessor, as the Runner merges it into the model
    rebuilt = build_model(cfg, model_cfg, default_scope='mmpretrain',
                          with_data_preprocessor=True)
    rebuilt.load_state_dict(load_checkpoint_file(path)['state_dict'], strict=True)
    return (_logits(rebuilt, forms.dataloader) - forms.logits['deploy']).abs().max().item()


def _draw_digits(forms: FormComparison, path: str, caption: str) -> str:
    """Held-out digits with both forms' predictions (wrong / disagreeing ones first)."""
    from rep_mm.demo.plots import choose_digits, plot_digit_predictions
    dataset = forms.dataloader.dataset
    labels = [int(label) for label in dataset.get_gt_labels()]
    predicted = {form: forms.logits[form].argmax(1).tolist() for form in forms.logits}
    shown = choose_digits(labels, predicted['train'], predicted['deploy'])
    images = [dataset[i]['inputs'][0].numpy() for i in shown]
    return plot_digit_predictions(images, [labels[i] for i in shown],
                                  [predicted['train'][i] for i in shown],
                                  [predicted['deploy'][i] for i in shown], path, caption)


FORMS_DEMO = FormsDemo(
    prefix='', metric='accuracy/top1', logits_of=_logits,
    phase='save, reload and draw the converted model', draw=_draw_digits,
    figure_name=FIGURE_NAME,
    caption='RepVGG on held-out digits: top-1 {train:.2f} % training-time, '
    '{deploy:.2f} % converted')


def run_classification_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None,
                            config: Path = DEFAULT_CONFIG,
                            part: Optional[DemoPart] = None) -> dict:
    """Train, test in both forms, compare, draw, save and reload; return the summary (module
    docstring).

    ``part`` shows progress and takes the logs (default: a new ``DemoPart('cls', work_dir)``).
    """
    import rep_mm
    require_config(config, 'demo config', ' or give --config')
    work_dir = osp.abspath(work_dir)
    data_dir = osp.abspath(data_dir or osp.join(work_dir, 'data', 'digits'))
    with DemoPart.use(part, 'cls', work_dir) as part:
        part.phase('prepare the digits')
        counts, images = prepare_demo_digits(data_dir, quick)
        cfg = digits_demo_config(Path(config), data_dir, osp.join(work_dir, 'train'), quick,
                                 counts)
        run = run_forms_demo(FORMS_DEMO, part, cfg, work_dir, images, quick)
        top1, logits = run.values, run.forms.logits
        out_path = osp.join(work_dir, CHECKPOINT_NAME)
        meta = dict(config=str(config), source_checkpoint=run.checkpoint, deploy=True,
                    top1=top1['deploy'], rep_mm_version=rep_mm.__version__, quick=quick)
        reload_max_abs = _save_and_reload(run.forms, cfg, out_path, meta)
        summary = dict(
            quick=quick, config=str(config), data_dir=data_dir, train_images=images[0],
            test_images=int(len(logits['train'])), epochs=int(cfg.train_cfg.max_epochs),
            top1=top1, top1_identical=top1['train'] == top1['deploy'],
            same_predictions=int((logits['train'].argmax(1) == logits['deploy'].argmax(1)).sum()),
            reload_max_abs_diff=reload_max_abs, checkpoint=out_path,
            train_checkpoint=run.checkpoint, target_top1=TARGET_TOP1, **run.summary())
    return part.finish(summary, summary['top1_identical'] and summary['unconverted_blocks'] == 0
                       and reload_max_abs == 0.0 and (quick or top1['deploy'] >= TARGET_TOP1))


def classification_rows(summary: dict) -> List[Row]:
    """The classification part's rows of the closing table."""
    top1 = summary['top1']
    return [
        ('classification', f"RepVGG tiny arch, {summary['converted_blocks']} blocks",
         f"{top1['train']:.2f} % top-1", f"{top1['deploy']:.2f} % top-1"),
        *form_rows(summary, f"{summary['test_images']} test digits",
                   f"{summary['epochs']} epochs"),
        ('', 'same prediction', '', f"{summary['same_predictions']}/{summary['test_images']}"),
    ]


def classification_notes(summary: dict) -> List[str]:
    """Closing line of the classification part: the converted checkpoint and its reload."""
    return [f"converted checkpoint: {short_path(summary['checkpoint'])} (strict reload into "
            f"deploy=True: max diff {summary['reload_max_abs_diff']:.2g})"]


def classification_failure(summary: dict, quick: bool) -> str:
    """Why the classification part failed (its summary's ``ok`` is False)."""
    reasons = [('accuracies differ', not summary['top1_identical']),
               (f"{summary['unconverted_blocks']} block(s) unconverted",
                summary['unconverted_blocks']),
               ('reloaded checkpoint differs', summary['reload_max_abs_diff']),
               (f'top-1 below {TARGET_TOP1}%',
                not quick and summary['top1']['deploy'] < TARGET_TOP1)]
    return '; '.join(reason for reason, failed in reasons if failed)


REPORT = PartReport('classification', SUMMARY_NAME, classification_rows, classification_notes,
                    classification_failure)


def format_table(summary: dict) -> str:
    """The classification part alone: its table rows and notes."""
    return format_part(REPORT, summary)
