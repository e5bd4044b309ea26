"""Checks before a tool writes its output file (convert, extract-scales, convert_backbone)."""
import os
from typing import Iterable

__all__ = ['same_file', 'check_output_path']


def same_file(a: str, b: str) -> bool:
    """True if paths ``a`` and ``b`` name one file (same real path, or same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_output_path(out: str, inputs: Iterable[str], overwrite: bool,
                      what: str = 'the output') -> None:
    """Refuse an output path that would destroy an input or silently replace a file.

    Args:
        out: the file about to be written.
        inputs: the files the tool reads (``out`` may be none of them).
        overwrite: allow replacing an existing ``out`` (the ``--overwrite`` flag).
        what: what is written, for the message (e.g. ``'the scales'``).

    Raises:
        ValueError: ``out`` is one of ``inputs``.
        IsADirectoryError: ``out`` is a directory.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    for path in inputs:
        if same_file(out, path):
            raise ValueError(f'output {out!r} is the same file as the input {path!r}; '
                             f'write {what} to another path')
    if os.path.isdir(out):
        raise IsADirectoryError(f'output {out!r} is a directory; give a file name')
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f'output {out!r} exists; pass --overwrite to replace it')
