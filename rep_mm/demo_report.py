"""The demo's closing table: one row group per part, training-time next to converted."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Sequence, Tuple

__all__ = ['Row', 'render_table', 'short_path', 'format_seconds', 'HEADER']

Row = Tuple[str, str, str, str]  # part, model / measure, training-time, converted
HEADER: Row = ('part', 'model / measure', 'training-time', 'converted')


def render_table(rows: Sequence[Row]) -> List[str]:
    """Text lines: the header, a rule, then the rows, every column left-aligned to its widest
    cell (a part's first row names it; its next rows carry its size and wall time)."""
    table = [HEADER] + list(rows)
    widths = [max(len(row[col]) for row in table) for col in range(4)]

    def line(row: Sequence[str]) -> str:
        return '  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

    return [line(HEADER), line(['-' * width for width in widths])] + [line(r) for r in rows]


def short_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    relative = osp.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def format_seconds(seconds: float) -> str:
    """``52 s`` or ``3 min 29 s``."""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f'{minutes} min {rest} s' if minutes else f'{rest} s'
