"""Write a generated dataset tree atomically, or verify and reuse the one already there.

Shared by :mod:`rep_mm.datasets.digits` and :mod:`rep_mm.datasets.digit_scenes`: the tree is
written into a hidden temporary sibling of ``out_dir`` and renamed into place in one
``os.replace``, so readers never see half a tree and concurrent writers of the same parameters
agree (the loser verifies the winner's tree).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Type


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


# mmpretrain's CustomDataset (and ImageNet) picks images by these extensions, case-insensitively
# (``filename.lower().endswith(IMG_EXTENSIONS)``); mmseg picks ``img_suffix`` case-sensitively.
# A superset is checked here: any of these extensions in any case.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def loader_files(directory: Path) -> List[str]:
    """Files under ``directory`` as mmengine's ``list_dir_or_file(recursive=True)`` lists them.

    It skips FILES whose name starts with ``'.'`` but descends into every directory (hidden ones
    too), following symbolic links; paths are relative to ``directory``, sorted.
    """
    found: List[str] = []

    def walk(path: Path) -> None:
        for entry in os.scandir(path):
            if not entry.name.startswith('.') and entry.is_file():
                found.append(Path(entry.path).relative_to(directory).as_posix())
            elif os.path.isdir(entry.path):
                walk(Path(entry.path))

    if directory.is_dir():
        walk(directory)
    return sorted(found)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def unexpected_loader_files(root: Path, directory: str,
                            expected: 're.Pattern[str]') -> List[str]:
    """Image files under ``root/directory`` a loader would pick up that do not match
    ``expected`` (a pattern on the path relative to ``directory``): files the generator did
    not write. Paths are returned relative to ``root``."""
    return [f'{directory}/{rel}' for rel in loader_files(root / directory)
            if is_image_name(rel) and not expected.match(rel)]


def extra_files_message(root: Path, extra: Sequence[str], loader: str, generator: str) -> str:
    shown = ', '.join(extra[:5]) + (f' ... (+{len(extra) - 5} more)' if len(extra) > 5 else '')
    return (f'{root} holds {len(extra)} image file(s) that {loader} would load but {generator} '
            f'did not write: {shown} (extensions {", ".join(IMG_EXTENSIONS)} in any case count, '
            f'in every sub-directory). The toolbox would train / evaluate on them too, so the '
            f'counts in its manifest would be wrong: move them out of {root} (or delete them), '
            f'or prepare the data into another out_dir')
