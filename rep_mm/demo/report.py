"""How a demo part reports: its rows of the closing table (training-time next to converted),
its closing notes and, when it failed, why (:class:`PartReport`)."""
from __future__ import annotations

import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

__all__ = ['Row', 'PartReport', 'render_table', 'format_part', 'report_alone', 'short_path',
           'format_seconds', 'HEADER', 'form_rows']

Row = Tuple[str, str, str, str]  # part, model / measure, training-time, converted
HEADER: Row = ('part', 'model / measure', 'training-time', 'converted')


@dataclass(frozen=True)
class PartReport:
    """What one part of the demo reports from its summary."""

    title: str  # in the failure messages and the closing line
    summary_name: str  # its summary's file name in the work dir
    rows: Callable[[dict], List[Row]]  # its rows of the closing table
    notes: Callable[[dict], List[str]]  # its lines below the table
    failure: Callable[[dict, bool], str]  # (summary, quick) -> why it failed


def render_table(rows: Sequence[Row]) -> List[str]:
    """Text lines: the header, a rule, then the rows, every column left-aligned to its widest
    cell (a part's first row names it; its next rows carry its size and wall time)."""
    table = [HEADER] + list(rows)
    widths = [max(len(row[col]) for row in table) for col in range(4)]

    def line(row: Sequence[str]) -> str:
        return '  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

    return [line(HEADER), line(['-' * width for width in widths])] + [line(r) for r in rows]


def format_part(report: PartReport, summary: dict) -> str:
    """One part alone: its rows of the closing table, then its notes."""
    return '\n'.join(render_table(report.rows(summary)) + report.notes(summary))


def report_alone(report: PartReport, summary: dict, work_dir: str, quick: bool) -> int:
    """The end of a part run on its own (``python -m rep_mm.demo.<part>``): write its summary
    to ``work_dir``, print its table and files, the failure on stderr; the exit status."""
    from rep_mm.io import write_json_atomic
    path = osp.join(osp.abspath(work_dir), report.summary_name)
    write_json_atomic(summary, path)
    print(format_part(report, summary))
    files = [f"picture: {short_path(summary['figure'])}"] if summary.get('figure') else []
    files += [f'summary: {short_path(path)}', f"logs: {short_path(summary['log_files'][0])}"]
    print('; '.join(files))
    if not summary['ok']:
        print('FAILED: ' + report.failure(summary, quick), file=sys.stderr)
    return 0 if summary['ok'] else 1


def short_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    relative = osp.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def format_seconds(seconds: float) -> str:
    """``52 s`` or ``3 min 29 s``."""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f'{minutes} min {rest} s' if minutes else f'{rest} s'


def form_rows(summary: dict, data_label: str, length_label: str) -> List[Row]:
    """The rows shared by the parts that compare a training-time and a converted model (the
    keys :func:`rep_mm.demo.compare_forms.compare_forms` puts in their summary): throughput on
    ``data_label``, parameters after ``length_label`` and the part's time, logit difference."""
    rate, params = summary['images_per_second'], summary['params']
    return [
        (data_label, f"images/s (batch {rate['batch']}, median)",
         f"{rate['train']:,.0f}", f"{rate['deploy']:,.0f} ({summary['speedup']:.2f}x)"),
        (f"{length_label}, {format_seconds(summary['total_seconds'])}",
         'parameters', f"{params['train']:,}", f"{params['deploy']:,}"),
        ('', 'max |logit difference|', '', f"{summary['max_abs_logit_diff']:.2g} (relative "
         f"{summary['max_rel_logit_diff']:.2g})"),
    ]
