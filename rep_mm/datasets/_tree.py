"""Write a generated dataset tree atomically, or verify and reuse the one already there.

Shared by :mod:`rep_mm.datasets.digits` and :mod:`rep_mm.datasets.digit_scenes`: the tree is
written into a hidden temporary sibling of ``out_dir`` and renamed into place in one
``os.replace``, so readers never see half a tree and concurrent writers of the same parameters
agree (the loser verifies the winner's tree).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Type


def current_umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_or_reuse_tree(out_dir, write: Callable[[Path], Dict],
                        check_existing: Callable[[Path], Dict],
                        error_cls: Type[Exception]) -> Dict:
    """Return the manifest of the tree in ``out_dir``, writing it first if needed.

    Args:
        out_dir (str | os.PathLike): directory of the tree; created with its parents.
        write: ``write(tmp_dir) -> manifest`` fills an empty directory.
        check_existing: ``check_existing(root) -> manifest`` verifies a non-empty ``root``
            (raises ``error_cls`` when it holds other files or other parameters).
        error_cls: the exception raised when ``out_dir`` is not a directory.

    Returns:
        dict: the manifest plus ``root`` (absolute path) and ``reused`` (True if an existing
        tree was verified and kept).
    """
    root = Path(out_dir).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise error_cls(f'out_dir {root} exists and is not a directory')
    if root.is_dir() and any(root.iterdir()):
        return dict(check_existing(root), root=str(root), reused=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.', suffix='.tmp', dir=root.parent))
    try:
        manifest = write(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())
        try:
            os.replace(tmp, root)  # atomic; also replaces an empty directory
        except OSError:
            if root.is_dir() and any(root.iterdir()):  # another process finished first
                return dict(check_existing(root), root=str(root), reused=True)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dict(manifest, root=str(root), reused=False)
