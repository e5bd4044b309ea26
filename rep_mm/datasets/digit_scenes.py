"""Write "digit scenes" (canvases of scikit-learn's real digits) for mmseg and mmdet.

Every scene is a ``size x size`` grayscale canvas (0 = background) holding 1 to ``max_digits``
handwritten digits from ``sklearn.datasets.load_digits()`` (1,797 real 8x8 images shipped in
the scikit-learn wheel; nothing is downloaded), each upscaled (bicubic) to a random side between
``size // 4`` and ``size * 7 // 16`` pixels and put at a random position where it overlaps no
other digit. :func:`prepare_digit_scenes` writes::

    out_dir/
      manifest.json                         # parameters, counts, SHA-256 of every split
      images/{train,val}/<00000>.png        # 1-channel uint8 scenes (loaders make them 3-channel)
      annotations/{train,val}/<00000>.png   # mmseg label maps: 0 background, digit d -> d + 1
      coco/instances_{train,val}.json       # COCO boxes: category_id d + 1, name str(d)

A pixel belongs to a digit where the upscaled digit is at least half of full ink (128); the box
of a digit is the tight box of its mask (COCO ``[x, y, w, h]`` in pixels). The 1,797 digit images
are split once (stratified, 75 % / 25 %, drawn from ``seed``): train scenes use only the first
part and val scenes only the second, so validation measures digits never seen in training.

Guarantees: deterministic (same arguments -> byte-identical files), atomic (a temporary sibling
directory is renamed into place), idempotent (an existing tree with a matching manifest and
matching files is reused; a tree with other parameters is never overwritten).

Command line: ``python -m rep_mm.datasets.digit_scenes OUT_DIR [--num-train 2000]
[--num-val 200] [--size 64] [--seed 0]``.
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

from ._tree import extra_files_message, unexpected_loader_files, write_or_reuse_tree
from .digits import sklearn_digits, stratified_split

__all__ = ['prepare_digit_scenes', 'DigitScenesError', 'SCENE_CLASSES', 'SCENE_PALETTE',
           'DIGIT_CATEGORIES', 'SCENE_SPLITS']

SCENE_CLASSES = ('background',) + tuple(str(d) for d in range(10))  # label map values 0..10
# label colours for visualisers: black background, ten well separated hues
SCENE_PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                 (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                 (210, 245, 60), (128, 128, 128))
DIGIT_CATEGORIES = tuple(str(d) for d in range(10))  # COCO category_id = digit + 1
SCENE_SPLITS = ('train', 'val')
MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
MIN_SIZE, MAX_SIZE = 32, 512
MAX_SCENES = 100_000
VAL_DIGIT_FRACTION = 0.25
INK_THRESHOLD = 128
PLACEMENT_TRIES = 50


class DigitScenesError(ValueError):
    """Bad arguments, or an output directory that holds something else."""


def _check_int(name: str, value, low: int, high: int, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DigitScenesError(f'{name} must be an int in [{low}, {high}] ({meaning}), '
                               f'got {value!r}')


def _check_args(num_train, num_val, size, seed, max_digits) -> None:
    _check_int('num_train', num_train, 1, MAX_SCENES, 'number of training scenes')
    _check_int('num_val', num_val, 1, MAX_SCENES, 'number of validation scenes')
    _check_int('size', size, MIN_SIZE, MAX_SIZE, 'canvas side in pixels')
    _check_int('seed', seed, 0, 2**32 - 1, 'random seed')
    _check_int('max_digits', max_digits, 1, 8, 'most digits per scene')


def _load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """``(images float32 (N, 8, 8) in 0..255, labels int64 (N,))`` of scikit-learn's digits."""
    images, labels = sklearn_digits('prepare_digit_scenes')
    return images.astype(np.float32), labels


def _digit_pools(labels: np.ndarray, seed: int) -> Dict[str, np.ndarray]:
    """Disjoint, stratified, sorted indices of the digits each split may use."""
    train, val = stratified_split(labels, VAL_DIGIT_FRACTION, seed)
    return {'train': train, 'val': val}


def _upscale(image: np.ndarray, side: int) -> np.ndarray:
    """One 8x8 digit (0..255 floats) resized to ``side x side`` (bicubic), clipped to 0..255."""
    from PIL import Image
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # mode 'F'
    resized = np.asarray(picture.resize((side, side), resample=Image.BICUBIC))
    return np.clip(resized, 0.0, 255.0)


def _place(rng: np.random.Generator, side: int, size: int,
           taken: List[Tuple[int, int, int, int]]) -> Optional[Tuple[int, int]]:
    """Top-left corner of a ``side`` square that keeps a 1-pixel gap to every taken square."""
    for _ in range(PLACEMENT_TRIES):
        y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(y + side + 1 <= ty or ty + ts + 1 <= y or x + side + 1 <= tx or tx + ts + 1 <= x
               for ty, tx, ts, _ in taken):
            return y, x
    return None


def _render_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
                  pool: np.ndarray, size: int, max_digits: int):
    """``(image uint8, label map uint8, [(digit, x, y, w, h, area), ...])`` of one scene."""
    canvas = np.zeros((size, size), np.float32)
    label_map = np.zeros((size, size), np.uint8)
    objects, taken = [], []
    low, high = size // 4, size * 7 // 16
    for _ in range(int(rng.integers(1, max_digits + 1))):
        index = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(low, high + 1))
        ink = float(rng.uniform(0.6, 1.0))  # pen strength varies between digits
        corner = _place(rng, side, size, taken)
        if corner is None:
            continue
        y, x = corner
        digit = _upscale(images[index], side)
        mask = digit >= INK_THRESHOLD
        if not mask.any():
            continue
        taken.append((y, x, side, index))
        canvas[y:y + side, x:x + side] = digit * ink
        label_map[y:y + side, x:x + side][mask] = labels[index] + 1
        rows, cols = np.nonzero(mask)
        objects.append((int(labels[index]), x + int(cols.min()), y + int(rows.min()),
                        int(cols.max() - cols.min()) + 1, int(rows.max() - rows.min()) + 1,
                        int(mask.sum())))
    return np.rint(canvas).astype(np.uint8), label_map, objects


def _png(array: np.ndarray) -> bytes:
    """A 2-D uint8 array as a grayscale PNG without metadata (byte-stable)."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(  # mode 'L'
        buffer, format='PNG', compress_level=6)
    return buffer.getvalue()


def _coco_skeleton() -> dict:
    return dict(info=dict(description='rep_mm digit scenes (sklearn.datasets.load_digits)',
                          version=str(FORMAT_VERSION)),
                licenses=[], images=[], annotations=[],
                categories=[dict(id=d + 1, name=name, supercategory='digit')
                            for d, name in enumerate(DIGIT_CATEGORIES)])


def _write_split(root: Path, split: str, count: int, size: int, seed: int, max_digits: int,
                 images: np.ndarray, labels: np.ndarray, pool: np.ndarray) -> dict:
    """Write one split; returns its statistics for the manifest."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SCENE_SPLITS.index(split)]))
    image_dir, label_dir = root / 'images' / split, root / 'annotations' / split
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    coco = _coco_skeleton()
    pixel_counts = np.zeros(len(SCENE_CLASSES), np.int64)
    for i in range(count):
        image, label_map, objects = _render_scene(rng, images, labels, pool, size, max_digits)
        name = f'{i:05d}.png'
        (image_dir / name).write_bytes(_png(image))
        (label_dir / name).write_bytes(_png(label_map))
        pixel_counts += np.bincount(label_map.ravel(), minlength=len(SCENE_CLASSES))
        coco['images'].append(dict(id=i + 1, file_name=name, width=size, height=size))
        for digit, x, y, w, h, area in objects:
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=i + 1, category_id=digit + 1,
                bbox=[x, y, w, h], area=area, iscrowd=0))
    (root / 'coco').mkdir(exist_ok=True)
    (root / 'coco' / f'instances_{split}.json').write_text(
        json.dumps(coco, sort_keys=True, separators=(',', ':')) + '\n')
    return dict(scenes=count, digits=len(coco['annotations']), digit_images=int(len(pool)),
                pixel_counts=pixel_counts.tolist())


# every scene / label map prepare_digit_scenes writes, relative to images|annotations/<split>
_EXPECTED_FILE = re.compile(r'^[0-9]{5}\.png$')


def _split_files(root: Path, split: str) -> List[Path]:
    files = sorted((root / 'images' / split).glob('*.png'))
    files += sorted((root / 'annotations' / split).glob('*.png'))
    return files + [root / 'coco' / f'instances_{split}.json']


def _digest(root: Path, split: str) -> str:
    """SHA-256 over the relative paths and contents of every file of one split."""
    sha = hashlib.sha256()
    for path in _split_files(root, split):
        if not path.is_file():
            return 'missing:' + path.relative_to(root).as_posix()
        sha.update(path.relative_to(root).as_posix().encode() + b'\0')
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _parameters(num_train, num_val, size, seed, max_digits) -> dict:
    return dict(format_version=FORMAT_VERSION, source='sklearn.datasets.load_digits',
                num_train=num_train, num_val=num_val, size=size, seed=seed,
                max_digits=max_digits, classes=list(SCENE_CLASSES))


def _write_tree(root: Path, params: dict) -> dict:
    images, labels = _load_digits()
    pools = _digit_pools(labels, params['seed'])
    manifest = dict(params, splits={}, sha256={})
    for split in SCENE_SPLITS:
        manifest['splits'][split] = _write_split(
            root, split, params[f'num_{split}'], params['size'], params['seed'],
            params['max_digits'], images, labels, pools[split])
        manifest['sha256'][split] = _digest(root, split)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + '\n')
    return manifest


def _check_existing(root: Path, params: dict) -> dict:
    """The manifest of an existing tree made with ``params`` whose files are intact; else raise."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        raise DigitScenesError(f'{root} exists and is not empty but has no readable {MANIFEST}: '
                               'it was not written by prepare_digit_scenes; choose another '
                               'out_dir or remove it') from None
    different = {k: (manifest.get(k), v) for k, v in params.items() if manifest.get(k) != v}
    if different:
        listing = ', '.join(f'{k}: found {a!r}, asked {b!r}' for k, (a, b) in different.items())
        raise DigitScenesError(f'{root} holds digit scenes made with other parameters '
                               f'({listing}); choose another out_dir or remove it')
    extra = [f for split in SCENE_SPLITS for sub in ('images', 'annotations')
             for f in unexpected_loader_files(root, f'{sub}/{split}', _EXPECTED_FILE)]
    if extra:
        raise DigitScenesError(extra_files_message(
            root, extra, 'mmseg (it lists images/<split> recursively by img_suffix)',
            'prepare_digit_scenes'))
    for split in SCENE_SPLITS:
        if _digest(root, split) != manifest.get('sha256', {}).get(split):
            raise DigitScenesError(f'the {split!r} files in {root} do not match its {MANIFEST} '
                                   '(modified or incomplete); remove the directory to rebuild it')
    return manifest


def prepare_digit_scenes(out_dir, num_train: int = 2000, num_val: int = 200, size: int = 64,
                         seed: int = 0, max_digits: int = 4) -> dict:
    """Write (or reuse) digit scenes for mmseg and mmdet under ``out_dir``.

    Args:
        out_dir (str | os.PathLike): directory of the tree; created with its parents.
        num_train (int): training scenes. Default 2000.
        num_val (int): validation scenes (digits unseen in training). Default 200.
        size (int): canvas side in pixels, 32..512. Default 64.
        seed (int): seed of the digit split and of every scene. Default 0.
        max_digits (int): most digits per scene (1..8; each scene has at least one). Default 4.

    Returns:
        dict: the manifest (parameters; per split ``scenes``, ``digits``, ``digit_images`` and
        ``pixel_counts`` per class; ``sha256`` per split) with ``root`` (absolute path) and
        ``reused`` (True if an existing tree was verified and kept).

    Raises:
        DigitScenesError: bad arguments, or ``out_dir`` holds other files or other parameters.
    """
    _check_args(num_train, num_val, size, seed, max_digits)
    params = _parameters(num_train, num_val, size, seed, max_digits)
    return write_or_reuse_tree(out_dir, lambda tmp: _write_tree(tmp, params),
                               lambda root: _check_existing(root, params), DigitScenesError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rep_mm.datasets.digit_scenes OUT_DIR [--num-train] [--num-val] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='directory to write (or reuse) the scenes in')
    parser.add_argument('--num-train', type=int, default=2000, help='training scenes (2000)')
    parser.add_argument('--num-val', type=int, default=200, help='validation scenes (200)')
    parser.add_argument('--size', type=int, default=64, help='canvas side in pixels (64)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (0)')
    parser.add_argument('--max-digits', type=int, default=4, help='most digits per scene (4)')
    args = parser.parse_args(argv)
    try:
        manifest = prepare_digit_scenes(args.out_dir, args.num_train, args.num_val, args.size,
                                        args.seed, args.max_digits)
    except DigitScenesError as error:
        parser.exit(2, f'error: {error}\n')
    state = 'reused' if manifest['reused'] else 'written'
    splits = manifest['splits']
    print(f"digit scenes {state} at {manifest['root']}: "
          + ', '.join(f"{s} {splits[s]['scenes']} scenes / {splits[s]['digits']} digits"
                      for s in SCENE_SPLITS) + f' at {args.size}x{args.size}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
