"""Saving a checkpoint atomically: never a partial file, never an unintended overwrite."""
from __future__ import annotations

import os
from typing import Any, Union

import torch

from .atomic import atomic_output

__all__ = ['save_checkpoint_atomic']


def save_checkpoint_atomic(obj: Any, path: Union[str, os.PathLike], overwrite: bool = False) -> str:
    """``torch.save`` to a temp file in the same directory, fsync, then move it into place.

    The temp file is ``.<name>.<pid>.<random>.tmp`` (:func:`rep_mm.io.make_temp_file`), so a
    leftover of a killed run can be recognised as stale (:func:`rep_mm.io.check_output_path`).

    Never leaves a partial file: on any error the temp file is removed and ``path`` is
    untouched. Refuses to replace an existing ``path`` unless ``overwrite=True``.

    Returns:
        str: the path written.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f'output {path!r} is a directory; give a file name')
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f'output {path!r} exists; pass overwrite=True (CLI: --overwrite) '
                              f'to replace it')
    with atomic_output(path, replace=overwrite, durable=True) as stream:
        torch.save(obj, stream)
    return path
