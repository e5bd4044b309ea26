"""Checks before a tool writes its output file, so that a bad destination costs no work.

Every tool (``rep-mm convert`` / ``extract-scales``, ``python -m
rep_mm.integrations.stock_backbones``, ``tools/*.py``) calls :func:`check_output_path` BEFORE it
starts working: a bad destination is reported in one line and nothing is computed or written.
"""
from __future__ import annotations

import os
import shutil
from typing import Iterable, List, Optional

from .atomic import clean_temp_files, temp_name

__all__ = ['same_file', 'NoSpaceError', 'OutputPathError', 'check_output_path']

SPACE_MARGIN = 1.05  # free space needed: estimated size * margin + 1 MiB
SPACE_SLACK = 1 << 20


class NoSpaceError(OSError):
    """Too little free space for an output (``errno.ENOSPC``)."""


class OutputPathError(ValueError):
    """An output path that may not be written: empty, a directory name, an input, too long,
    or an existing special file."""


def same_file(a: str, b: str) -> bool:
    """True if paths ``a`` and ``b`` name one file (same real path, or same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _existing_ancestor(directory: str) -> str:
    """The nearest existing ancestor of ``directory``; raises if a component is not a dir."""
    path = directory
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise NotADirectoryError(f'{path!r} is a file, not a directory: it cannot hold the '
                                 f'output directory {directory!r}')
    return path


def _limit(path: str, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def _check_the_file(out: str, inputs: Iterable[str], overwrite: bool, what: str) -> None:
    """The output itself: a file name, none of the inputs, not an existing file unless told."""
    if not out:
        raise OutputPathError(f'the path for {what} is empty; give a file name')
    if out.endswith(os.sep) or (os.altsep and out.endswith(os.altsep)):
        raise OutputPathError(f'output {out!r} ends with {out[-1]!r}, i.e. names a directory; '
                              f'give a file name for {what} (e.g. {out.rstrip("/")}/out.pth)')
    for path in inputs:
        if path and same_file(out, path):
            raise OutputPathError(f'output {out!r} is the same file as the input {path!r}; '
                                  f'write {what} to another path')
    if os.path.isdir(out):
        raise IsADirectoryError(f'output {out!r} is a directory; give a file name')
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f'output {out!r} exists; pass --overwrite to replace it')
    if os.path.lexists(out) and not os.path.isfile(out):
        raise OutputPathError(f'output {out!r} exists and is not a regular file (a broken link '
                              f'or a device); remove it or choose another path')


def _check_name_lengths(out: str, directory: str, ancestor: str) -> None:
    """The file name, its temp name and the full temp path fit the file system's limits."""
    name_max = _limit(ancestor, 'PC_NAME_MAX', 255)
    path_max = _limit(ancestor, 'PC_PATH_MAX', 4096)
    base = os.path.basename(out)
    overhead = len(os.fsencode(temp_name(out))) - len(os.fsencode(base))
    for name in (base, temp_name(out)):
        if len(os.fsencode(name)) > name_max:
            raise OutputPathError(f'output file name {base!r} is too long: its temp file '
                                  f'{name[:24]}... has {len(os.fsencode(name))} bytes, the file '
                                  f'system allows {name_max} (the name itself may have at most '
                                  f'{name_max - overhead} bytes)')
    full = os.path.join(directory, temp_name(out))
    if len(os.fsencode(full)) >= path_max:
        raise OutputPathError(f'output path {out!r} is too long: {len(os.fsencode(full))} bytes '
                              f'with its temp name, the system allows {path_max - 1}')


def _check_space(ancestor: str, size_hint: Optional[int], what: str) -> None:
    if size_hint is None or size_hint <= 0:
        return
    free = shutil.disk_usage(ancestor).free
    needed = int(size_hint * SPACE_MARGIN) + SPACE_SLACK
    if free < needed:
        raise NoSpaceError(28, f'not enough free space for {what} in {ancestor!r}: about '
                               f'{needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free')


def check_output_path(out: str, inputs: Iterable[str], overwrite: bool,
                      what: str = 'the output', size_hint: Optional[int] = None,
                      clean_stale: bool = True) -> List[str]:
    """Refuse an output path that cannot be written, or would destroy an input or a file.

    Checked before any work: a trailing slash, ``out`` being an input, a directory, or an
    existing file (without ``overwrite``); its directory: a path component that is a file, not
    writable, a file name (or the temp name ``.<name>.<pid>.<random>.tmp`` derived from it) or
    path too long for the file system, and (with ``size_hint`` bytes) too little free space.
    Missing parent directories are allowed (the writers create them) when the nearest existing
    one is a writable directory.

    Args:
        out: the file about to be written.
        inputs: the files the tool reads (``out`` may be none of them).
        overwrite: allow replacing an existing ``out`` (the ``--overwrite`` flag).
        what: what is written, for the message (e.g. ``'the scales'``).
        size_hint: estimated size of the output in bytes, if known.
        clean_stale: look for leftover temp files of ``out`` and remove the stale ones.

    Returns:
        list of str: notes about leftover temp files found / removed (print them).

    Raises:
        OutputPathError: ``out`` is one of ``inputs``, is empty or ends with a slash, names an
            existing special file; a name too long (a ``ValueError``).
        IsADirectoryError: ``out`` is a directory.
        NotADirectoryError: a parent of ``out`` is a file.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        PermissionError: the directory is not writable.
        NoSpaceError: too little free space for ``size_hint`` bytes.
    """
    out = os.fspath(out)
    _check_the_file(out, inputs, overwrite, what)
    directory = os.path.dirname(os.path.abspath(out))
    ancestor = _existing_ancestor(directory)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f'cannot write {what} to {out!r}: directory {ancestor!r} is not '
                              f'writable')
    _check_name_lengths(out, directory, ancestor)
    _check_space(ancestor, size_hint, what)
    return clean_temp_files(out) if clean_stale and os.path.isdir(directory) else []
