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
   draws held-out digits with both forms' predictions (``predictions_digits.png``) and writes
   ``summary.json``;
6. then the segmentation part (:mod:`rep_mm.demo.segmentation`): PSPNet with a RepVGG backbone learns
   generated digit scenes, is tested in both forms, writes ``summary_seg.json``;
7. then the RepOptimizer part (:mod:`rep_mm.demo.repopt`): a Hyper-Search run, its scales
   extracted, a plain RepOpt-VGG trained with RepOptSGD from them (``repopt_summary.json``).
   ``--parts cls,seg`` (etc.) runs a subset.

While it runs, each part shows one progress line on stderr (:mod:`rep_mm.demo.progress`); the
mm Runners log to files in their work dirs, warnings to ``WORK_DIR/<part>.log``. At the end one
table compares the training-time and converted forms of every part (:mod:`rep_mm.demo.report`)
and names the pictures, summaries and logs; a failed part names the log to read.

The exit status is 0 when, in every part run, the two accuracies are identical, no block is left
unconverted, the reloaded checkpoint reproduces the converted model and (full run) top-1 >= 90%.
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from rep_mm.demo import repopt as demo_repopt, segmentation as demo_seg
from rep_mm.demo.compare_forms import FormComparison, compare_forms, train_to_checkpoint
from rep_mm.demo.progress import DemoPart, planned_iterations
from rep_mm.demo.report import Row, form_rows, format_seconds, render_table, short_path
from rep_mm.demo.common import (QUICK_TEST_IMAGES, QUICK_TRAIN_IMAGES, digits_demo_config,
                               write_json_atomic)

__all__ = ['run_classification_demo', 'digits_demo_config', 'classification_rows', 'main',
           'DEFAULT_CONFIG', 'TARGET_TOP1']

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
TARGET_TOP1 = 90.0
CHECKPOINT_NAME = 'repvgg-tiny_digits_deploy.pth'
SUMMARY_NAME = 'summary.json'
FIGURE_NAME = 'predictions_digits.png'


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

    from rep_mm.io.checkpoint import load_checkpoint_file, save_checkpoint_atomic
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


# ------------------------------------------------------------------------------- the part
def run_classification_demo(work_dir: str, quick: bool = False, data_dir: Optional[str] = None,
                            config: Path = DEFAULT_CONFIG,
                            part: Optional[DemoPart] = None) -> dict:
    """Train, test in both forms, compare, save, draw; return the summary (module docstring).

    ``part`` shows progress and takes the logs (default: a new ``DemoPart('cls', work_dir)``).
    """
    import rep_mm
    from rep_mm.datasets import prepare_digits
    if not Path(config).is_file():
        raise FileNotFoundError(f'demo config {config} not found; the demo runs from a source '
                                f'checkout of rep_mm (pip install -e .) or give --config')
    work_dir = osp.abspath(work_dir)
    data_dir = osp.abspath(data_dir or osp.join(work_dir, 'data', 'digits'))
    with DemoPart.use(part, 'cls', work_dir) as part:
        part.phase('prepare the digits')
        digits = prepare_digits(data_dir, size=32, seed=0)
        cfg = digits_demo_config(Path(config), data_dir, osp.join(work_dir, 'train'), quick,
                                 digits['counts'])
        train_images = QUICK_TRAIN_IMAGES if quick else digits['counts']['train']
        test_images = QUICK_TEST_IMAGES if quick else digits['counts']['test']
        part.plan(planned_iterations(cfg, train_images, test_images, tests=2))
        _, train_seconds, checkpoint = train_to_checkpoint(part, cfg, 'demo_train')
        forms = compare_forms(part, cfg, checkpoint, work_dir, '', _logits, quick)
        top1 = {form: metrics['accuracy/top1'] for form, metrics in forms.metrics.items()}
        part.phase('save, reload and draw the converted model')
        out_path = osp.join(work_dir, CHECKPOINT_NAME)
        meta = dict(config=str(config), source_checkpoint=checkpoint, deploy=True,
                    top1=top1['deploy'], rep_mm_version=rep_mm.__version__, quick=quick)
        reload_max_abs = _save_and_reload(forms.models['deploy'], cfg, out_path, meta,
                                          forms.logits['deploy'], forms.dataloader)
        figure = _draw_digits(forms, osp.join(work_dir, FIGURE_NAME),
                              f'RepVGG on held-out digits: top-1 {top1["train"]:.2f} % '
                              f'training-time, {top1["deploy"]:.2f} % converted')
        summary = dict(
            quick=quick, config=str(config), data_dir=data_dir, train_images=train_images,
            test_images=int(len(forms.logits['train'])), epochs=int(cfg.train_cfg.max_epochs),
            train_seconds=round(train_seconds, 2), top1=top1,
            top1_identical=top1['train'] == top1['deploy'],
            same_predictions=int((forms.logits['train'].argmax(1) ==
                                  forms.logits['deploy'].argmax(1)).sum()),
            reload_max_abs_diff=reload_max_abs, checkpoint=out_path, train_checkpoint=checkpoint,
            figure=figure, target_top1=TARGET_TOP1, **forms.summary)
    return part.finish(summary, summary['top1_identical'] and summary['unconverted_blocks'] == 0
                       and reload_max_abs == 0.0 and (quick or top1['deploy'] >= TARGET_TOP1))


# ------------------------------------------------------------------------------- output
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
    """Closing lines of the classification part: the converted checkpoint and the picture."""
    return [f"converted checkpoint: {short_path(summary['checkpoint'])} (strict reload into "
            f"deploy=True: max diff {summary['reload_max_abs_diff']:.2g})"]


def format_table(summary: dict) -> str:
    """The classification part alone: its table rows and notes."""
    return '\n'.join(render_table(classification_rows(summary)) + classification_notes(summary))


def _classification_failure(summary: dict, quick: bool) -> str:
    reasons = [('accuracies differ', not summary['top1_identical']),
               (f"{summary['unconverted_blocks']} block(s) unconverted",
                summary['unconverted_blocks']),
               ('reloaded checkpoint differs', summary['reload_max_abs_diff']),
               (f'top-1 below {TARGET_TOP1}%',
                not quick and summary['top1']['deploy'] < TARGET_TOP1)]
    return '; '.join(reason for reason, failed in reasons if failed)


@dataclass(frozen=True)
class PartSpec:
    """How ``main`` runs one part and reports it."""

    title: str
    summary_name: str
    run: Callable[[str, argparse.Namespace, DemoPart], dict]
    rows: Callable[[dict], List[Row]]
    notes: Callable[[dict], List[str]]
    failure: Callable[[dict, bool], str]


PART_SPECS = {
    'cls': PartSpec('classification', SUMMARY_NAME,
                    lambda work_dir, args, part: run_classification_demo(
                        work_dir, quick=args.quick, data_dir=args.data_dir,
                        config=Path(args.config), part=part),
                    classification_rows, classification_notes, _classification_failure),
    'seg': PartSpec('segmentation', demo_seg.SUMMARY_NAME,
                    lambda work_dir, args, part: demo_seg.run_segmentation_demo(
                        work_dir, quick=args.quick, part=part),
                    demo_seg.segmentation_rows, demo_seg.segmentation_notes,
                    demo_seg.segmentation_failure),
    'repopt': PartSpec('RepOptimizer', demo_repopt.SUMMARY_NAME,
                       lambda work_dir, args, part: demo_repopt.run_repopt_demo(
                           work_dir, quick=args.quick, data_dir=args.data_dir, part=part),
                       demo_repopt.repopt_rows, demo_repopt.repopt_notes,
                       demo_repopt.repopt_failure),
}
PARTS = tuple(PART_SPECS)


def _run_part(key: str, work_dir: str, args: argparse.Namespace):
    """Run one part in its own :class:`DemoPart`: ``(summary or None, failure or None, part)``;
    an exception is reported with the log to read, and the next part still runs."""
    spec = PART_SPECS[key]
    part = DemoPart(key, work_dir)
    try:
        with part:
            summary = spec.run(work_dir, args, part)
            write_json_atomic(summary, osp.join(work_dir, spec.summary_name))
    except Exception as error:  # noqa: BLE001  (its traceback is in part.log_file)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ''
        return None, (f'{spec.title}: {type(error).__name__}: {message}; '
                      f'{part.where_to_look()}'), part
    if summary['ok']:
        return summary, None, part
    return summary, (f'{spec.title}: {spec.failure(summary, args.quick)}; '
                     f'{part.where_to_look()}'), part


def _closing_lines(results: dict, work_dir: str) -> List[str]:
    """The closing table of every part that finished, then where its files are."""
    rows, notes, pictures, summaries, logs = [], [], [], [], []
    for key, (summary, part) in results.items():
        logs.append(short_path(part.log_file))
        if summary is None:
            continue
        spec = PART_SPECS[key]
        rows += spec.rows(summary)
        notes += spec.notes(summary)
        pictures += [short_path(summary['figure'])] if summary.get('figure') else []
        summaries.append(short_path(osp.join(work_dir, spec.summary_name)))
    lines = [''] + render_table(rows) + [''] + notes
    if pictures:
        lines.append('predictions drawn (training-time vs converted): ' + ', '.join(pictures))
    if summaries:
        lines.append('summaries: ' + ', '.join(summaries))
    lines.append(f"logs: {', '.join(logs)} (and each Runner's <work dir>/<time>/<time>.log)")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of the demo; returns the exit status (0 when every part passed)."""
    parser = argparse.ArgumentParser(prog='python -m rep_mm.demo',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='outputs: logs, checkpoints, pictures, summary*.json '
                        '(default work_dirs/demo)')
    parser.add_argument('--quick', action='store_true',
                        help=f'train on {QUICK_TRAIN_IMAGES} images, test on {QUICK_TEST_IMAGES} '
                        f'(seconds; for tests)')
    parser.add_argument('--data-dir', default=None,
                        help='digits tree to write or reuse (default WORK_DIR/data/digits)')
    parser.add_argument('--config', default=str(DEFAULT_CONFIG),
                        help='mmpretrain config to train (default: the digits RepVGG config)')
    parser.add_argument('--parts', default=','.join(PARTS),
                        help='comma-separated parts to run: cls (RepVGG classification on '
                        'digits), seg (PSPNet-RepVGG on digit scenes; rep_mm.demo.segmentation), repopt '
                        '(Hyper-Search -> scales -> RepOpt-VGG with RepOptSGD; '
                        'rep_mm.demo.repopt). Default: all three')
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(',') if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown part(s) {unknown or args.parts!r}; "
                     f"allowed: {', '.join(PARTS)}")
    if 'cls' in parts and not Path(args.config).is_file():
        parser.error(f'--config: {args.config} not found')
    work_dir = osp.abspath(args.work_dir)
    started = time.perf_counter()
    results, failures = {}, []
    for key in parts:
        summary, failure, part = _run_part(key, work_dir, args)
        results[key] = (summary, part)
        failures += [failure] if failure else []
    print('\n'.join(_closing_lines(results, work_dir)))
    elapsed = format_seconds(time.perf_counter() - started)
    if failures:
        for failure in failures:
            print('DEMO FAILED: ' + failure, file=sys.stderr)
        return 1
    print(f"demo passed: {', '.join(PART_SPECS[key].title for key in parts)} in {elapsed}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
