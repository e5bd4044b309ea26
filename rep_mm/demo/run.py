"""The rep_mm demo: train small RepVGG-style models on digits, convert them, show nothing changed.

``python -m rep_mm.demo [--work-dir DIR] [--quick] [--parts cls,seg,repopt]`` (also
``rep-mm demo``) runs the parts in turn, each in its own :class:`rep_mm.demo.progress.DemoPart`:

* ``cls`` (:mod:`rep_mm.demo.classification`): a small RepVGG trained on scikit-learn's
  handwritten digits, tested in its training-time and converted forms, its converted checkpoint
  saved and reloaded strictly, held-out digits drawn with both forms' predictions
  (``summary.json``, ``predictions_digits.png``);
* ``seg`` (:mod:`rep_mm.demo.segmentation`): PSPNet with a RepVGG backbone learns generated
  digit scenes, is tested in both forms, a few scenes drawn (``summary_seg.json``,
  ``predictions_scenes.png``);
* ``repopt`` (:mod:`rep_mm.demo.repopt`): a Hyper-Search run, its scales extracted, a plain
  RepOpt-VGG trained with RepOptSGD from them (``repopt_summary.json``).

While it runs, each part shows one progress line on stderr (:mod:`rep_mm.demo.progress`); the
mm Runners log to files in their work dirs, warnings to ``WORK_DIR/<part>.log``. At the end one
table compares the training-time and converted forms of every part (:mod:`rep_mm.demo.report`)
and names the pictures, summaries and logs; a failed part names the log to read.

The exit status is 0 when every part run passed (see each part's module), else 1; a bad command
line exits with 2 (argparse).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from rep_mm.demo import classification, repopt, segmentation
from rep_mm.demo.common import QUICK_TEST_IMAGES, QUICK_TRAIN_IMAGES
from rep_mm.io import write_json_atomic
from rep_mm.demo.progress import DemoPart
from rep_mm.demo.report import PartReport, format_seconds, render_table, short_path

__all__ = ['main', 'PART_SPECS', 'PARTS']


@dataclass(frozen=True)
class PartSpec:
    """How :func:`main` runs one part (from its command line) and reports it."""

    report: PartReport
    run: Callable[[str, argparse.Namespace, DemoPart], dict]  # (work_dir, args, part)


PART_SPECS = {
    'cls': PartSpec(classification.REPORT,
                    lambda work_dir, args, part: classification.run_classification_demo(
                        work_dir, quick=args.quick, data_dir=args.data_dir,
                        config=Path(args.config), part=part)),
    'seg': PartSpec(segmentation.REPORT,
                    lambda work_dir, args, part: segmentation.run_segmentation_demo(
                        work_dir, quick=args.quick, part=part)),
    'repopt': PartSpec(repopt.REPORT,
                       lambda work_dir, args, part: repopt.run_repopt_demo(
                           work_dir, quick=args.quick, data_dir=args.data_dir, part=part)),
}
PARTS = tuple(PART_SPECS)


def _run_part(key: str, work_dir: str, args: argparse.Namespace):
    """Run one part in its own :class:`DemoPart` and write its summary:
    ``(summary or None, failure or None, part)``; an exception is reported with the log to
    read, and the next part still runs."""
    report = PART_SPECS[key].report
    part = DemoPart(key, work_dir)
    try:
        with part:
            summary = PART_SPECS[key].run(work_dir, args, part)
            write_json_atomic(summary, osp.join(work_dir, report.summary_name))
    except Exception as error:  # noqa: BLE001  (its traceback is in part.log_file)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ''
        return None, (f'{report.title}: {type(error).__name__}: {message}; '
                      f'{part.where_to_look()}'), part
    if summary['ok']:
        return summary, None, part
    return summary, (f'{report.title}: {report.failure(summary, args.quick)}; '
                     f'{part.where_to_look()}'), part


def _closing_lines(results: dict, work_dir: str) -> List[str]:
    """The closing table of every part that finished, then where its files are."""
    rows, notes, pictures, summaries, logs = [], [], [], [], []
    for key, (summary, part) in results.items():
        logs.append(short_path(part.log_file))
        if summary is None:
            continue
        report = PART_SPECS[key].report
        rows += report.rows(summary)
        notes += report.notes(summary)
        pictures += [short_path(summary['figure'])] if summary.get('figure') else []
        summaries.append(short_path(osp.join(work_dir, report.summary_name)))
    lines = [''] + render_table(rows) + [''] + notes
    if pictures:
        lines.append('predictions drawn (training-time vs converted): ' + ', '.join(pictures))
    if summaries:
        lines.append('summaries: ' + ', '.join(summaries))
    lines.append(f"logs: {', '.join(logs)} (and each Runner's <work dir>/<time>/<time>.log)")
    return lines


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument('--config', default=str(classification.DEFAULT_CONFIG),
                        help='mmpretrain config to train (default: the digits RepVGG config)')
    parser.add_argument('--parts', default=','.join(PARTS),
                        help='comma-separated parts to run: cls (RepVGG classification on '
                        'digits; rep_mm.demo.classification), seg (PSPNet-RepVGG on digit '
                        'scenes; rep_mm.demo.segmentation), repopt (Hyper-Search -> scales -> '
                        'RepOpt-VGG with RepOptSGD; rep_mm.demo.repopt). Default: all three')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of the demo; returns the exit status (0 when every part passed)."""
    parser = _parser()
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
    print(f"demo passed: {', '.join(PART_SPECS[key].report.title for key in parts)} "
          f"in {elapsed}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
