"""Write scikit-learn's handwritten digits as an mmpretrain ``CustomDataset`` folder tree.

``sklearn.datasets.load_digits()`` reads 1,797 real 8x8 grayscale digits (UCI, 10 classes) that
ship inside the scikit-learn wheel, so nothing is downloaded. :func:`prepare_digits` writes::

    out_dir/
      manifest.json          # parameters, counts and a SHA-256 of every split
      train/<0..9>/<index>.png
      test/<0..9>/<index>.png

Images are upscaled to ``size x size`` (bicubic) and stored as **1-channel** grayscale PNGs
(0 = background, 255 = ink); mmcv's ``LoadImageFromFile`` (``color_type='color'``) replicates
them to 3 channels when loading. ``<index>`` is the row in ``load_digits()``. The split is a
fixed stratified one (default 1,437 train / 360 test) drawn from ``seed``.

Guarantees: deterministic (same arguments -> byte-identical files), atomic (written to a
temporary sibling directory, then renamed), idempotent (an existing tree with a matching
manifest is verified and reused; a different one is never overwritten).

Command line: ``python -m rep_mm.datasets.digits OUT_DIR [--size 32] [--seed 0]``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._tree import extra_files_message, loader_files, unexpected_loader_files, write_or_reuse_tree

__all__ = ['prepare_digits', 'DigitsError', 'NUM_DIGITS', 'DIGITS_CLASSES', 'SPLITS']

NUM_DIGITS = 1797
DIGITS_CLASSES = tuple(str(i) for i in range(10))
SPLITS = ('train', 'test')
MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
MIN_SIZE, MAX_SIZE = 8, 256


class DigitsError(ValueError):
    """Bad arguments, or an output directory that holds something else."""


def _check_args(size: int, seed: int, test_size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DigitsError(f'size must be an int in [{MIN_SIZE}, {MAX_SIZE}] (image side in '
                          f'pixels), got {size!r}')
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise DigitsError(f'seed must be an int in [0, 2**32), got {seed!r}')
    if (isinstance(test_size, bool) or not isinstance(test_size, int)
            or not 10 <= test_size <= NUM_DIGITS - 10):
        raise DigitsError(f'test_size must be an int in [10, {NUM_DIGITS - 10}] (at least one '
                          f'image per class on both sides), got {test_size!r}')


def sklearn_digits(caller: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(images float64 (N, 8, 8) scaled to 0..255, labels int64 (N,))`` of scikit-learn's
    digits; ``caller`` names the function in the message when scikit-learn is missing. Shared
    with :mod:`rep_mm.datasets.digit_scenes`."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - sklearn is a demo/test dependency
        raise ImportError(f'{caller} needs scikit-learn (pip install scikit-learn); '
                          'it reads the digits shipped inside its wheel') from error
    digits = load_digits()
    return digits.images * (255.0 / 16.0), digits.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_size, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train, test)`` indices of ``labels`` (each sorted) drawn from ``seed``;
    ``test_size`` is a count or a fraction (as scikit-learn's ``train_test_split``)."""
    from sklearn.model_selection import train_test_split
    train, test = train_test_split(np.arange(len(labels)), test_size=test_size,
                                   stratify=labels, random_state=seed, shuffle=True)
    return np.sort(train), np.sort(test)


def _load() -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 8, 8) in 0..255, labels (N,))`` of scikit-learn's digits."""
    images, labels = sklearn_digits('prepare_digits')
    return np.rint(images).clip(0, 255).astype(np.uint8), labels


def _split(labels: np.ndarray, seed: int, test_size: int) -> Dict[str, np.ndarray]:
    """Stratified train/test indices (sorted) drawn from ``seed``."""
    train, test = stratified_split(labels, test_size, seed)
    return {'train': train, 'test': test}


def _encode_png(image: np.ndarray, size: int) -> bytes:
    """One 8x8 uint8 digit, upscaled to ``size`` x ``size``, as PNG bytes (no metadata)."""
    from PIL import Image
    picture = Image.fromarray(np.ascontiguousarray(image))  # uint8 2-D -> mode 'L'
    if size != image.shape[0]:
        picture = picture.resize((size, size), resample=Image.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format='PNG', optimize=False, compress_level=6)
    return buffer.getvalue()


# every image prepare_digits writes, relative to its split folder
_EXPECTED_FILE = re.compile(r'^[0-9]/[0-9]{4}\.png$')


def loader_count(root: Path, split: str) -> int:
    """How many images mmpretrain's CustomDataset would load from ``root/split``."""
    from ._tree import is_image_name
    return sum(1 for rel in loader_files(root / split) if '/' in rel and is_image_name(rel))


def _relative_files(root: Path, split: str) -> List[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / split).rglob('*.png'))


def _digest(root: Path, split: str) -> str:
    """SHA-256 over the sorted relative paths and contents of one split."""
    sha = hashlib.sha256()
    for rel in _relative_files(root, split):
        sha.update(rel.encode())
        sha.update(b'\0')
        sha.update((root / rel).read_bytes())
    return sha.hexdigest()


def _expected_manifest(size: int, seed: int, test_size: int) -> dict:
    return dict(format_version=FORMAT_VERSION, source='sklearn.datasets.load_digits',
                size=size, seed=seed, test_size=test_size, channels=1,
                classes=list(DIGITS_CLASSES))


def _write_tree(root: Path, size: int, seed: int, test_size: int) -> dict:
    images, labels = _load()
    manifest = _expected_manifest(size, seed, test_size)
    manifest['counts'], manifest['class_counts'], manifest['sha256'] = {}, {}, {}
    for split, indices in _split(labels, seed, test_size).items():
        for name in DIGITS_CLASSES:
            (root / split / name).mkdir(parents=True)
        for index in indices:
            path = root / split / str(labels[index]) / f'{index:04d}.png'
            path.write_bytes(_encode_png(images[index], size))
        manifest['counts'][split] = int(len(indices))
        manifest['class_counts'][split] = np.bincount(labels[indices], minlength=10).tolist()
        manifest['sha256'][split] = _digest(root, split)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + '\n')
    return manifest


def _read_manifest(root: Path) -> Optional[dict]:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _check_existing(root: Path, size: int, seed: int, test_size: int) -> dict:
    """The manifest of an existing tree that matches the arguments and its files; else raise."""
    manifest = _read_manifest(root)
    if manifest is None:
        raise DigitsError(f'{root} exists and is not empty but has no readable {MANIFEST}: it is '
                          f'not a digits tree written by prepare_digits; choose another out_dir '
                          f'or remove it')
    expected = _expected_manifest(size, seed, test_size)
    different = {k: (manifest.get(k), v) for k, v in expected.items() if manifest.get(k) != v}
    if different:
        listing = ', '.join(f'{k}: found {a!r}, asked {b!r}' for k, (a, b) in different.items())
        raise DigitsError(f'{root} holds digits prepared with other parameters ({listing}); '
                          f'choose another out_dir or remove it')
    extra, classes = [], set(DIGITS_CLASSES)
    for split in SPLITS:
        extra += unexpected_loader_files(root, split, _EXPECTED_FILE)
        # CustomDataset makes every directory under the split (hidden ones too) a class
        folders = sorted(p.name for p in (root / split).iterdir() if p.is_dir()) \
            if (root / split).is_dir() else []
        unknown = [f'{split}/{name}/' for name in folders if name not in classes]
        if unknown:
            raise DigitsError(f'{root} holds folder(s) {", ".join(unknown)} that mmpretrain\'s '
                              f'CustomDataset would take as extra classes (it makes every '
                              f'directory under {split}/ a class, hidden ones too); move them out '
                              f'of {root}, or prepare the digits into another out_dir')
    if extra:
        raise DigitsError(extra_files_message(root, extra, "mmpretrain's CustomDataset",
                                              'prepare_digits'))
    for split in SPLITS:
        if _digest(root, split) != manifest.get('sha256', {}).get(split):
            raise DigitsError(f'the {split!r} files in {root} do not match its {MANIFEST} '
                              f'(modified or incomplete); remove the directory to rebuild it')
    return manifest


def prepare_digits(out_dir, size: int = 32, seed: int = 0, test_size: int = 360) -> dict:
    """Write (or reuse) the digits as ``out_dir/{train,test}/<class>/<index>.png``.

    Args:
        out_dir (str | os.PathLike): directory of the tree; created with its parents.
        size (int): image side in pixels (8 keeps the originals). Default 32.
        seed (int): seed of the stratified split. Default 0.
        test_size (int): images in the test split. Default 360 (train gets 1,437).

    Returns:
        dict: the manifest (parameters, ``counts``, ``class_counts``, ``sha256`` per split) with
        ``root`` (absolute path) and ``reused`` (True if an existing tree was verified and kept).

    Raises:
        DigitsError: bad arguments, or ``out_dir`` holds other files or other parameters.
    """
    _check_args(size, seed, test_size)
    return write_or_reuse_tree(out_dir, lambda tmp: _write_tree(tmp, size, seed, test_size),
                               lambda root: _check_existing(root, size, seed, test_size),
                               DigitsError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rep_mm.datasets.digits OUT_DIR [--size] [--seed] [--test-size]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='directory to write (or reuse) the digits tree in')
    parser.add_argument('--size', type=int, default=32, help='image side in pixels (default 32)')
    parser.add_argument('--seed', type=int, default=0, help='split seed (default 0)')
    parser.add_argument('--test-size', type=int, default=360,
                        help='images in the test split (default 360)')
    args = parser.parse_args(argv)
    try:
        manifest = prepare_digits(args.out_dir, args.size, args.seed, args.test_size)
    except DigitsError as error:
        parser.exit(2, f'error: {error}\n')
    state = 'reused' if manifest['reused'] else 'written'
    print(f"digits {state} at {manifest['root']}: {manifest['counts']['train']} train / "
          f"{manifest['counts']['test']} test images of {args.size}x{args.size}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
