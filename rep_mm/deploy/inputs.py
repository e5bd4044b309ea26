"""Inputs of an export: checks before anything is written, and the default test image."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from .errors import DeployError

__all__ = ['WORK_DIR_OUTPUTS', 'check_inputs', 'sample_image']

WORK_DIR_OUTPUTS = ('converted.pth', 'deploy_model.py', 'deploy_cfg.py', 'end2end.onnx',
                    'end2end.onnx.data', 'input.png', 'deploy.json', 'pipeline.json',
                    'detail.json', 'report.json')


def check_inputs(config: str, checkpoint: Optional[str], random_init: bool,
                 image: Optional[str], work_dir: Path, overwrite: bool) -> None:
    """Raise :class:`DeployError` on a missing file, a contradictory checkpoint choice, or a
    work dir where export would overwrite an input or (without ``overwrite``) earlier output."""
    if not os.path.isfile(config):
        raise DeployError(f'config {config!r} does not exist (give an mmpretrain, mmseg or '
                          f'mmdet config that uses rep_mm)')
    if checkpoint is None and not random_init:
        raise DeployError('give a checkpoint (training-form or converted), or --random-init '
                          'for a smoke export with random weights')
    if checkpoint is not None and random_init:
        raise DeployError('give either a checkpoint or --random-init, not both')
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise DeployError(f'checkpoint {checkpoint!r} does not exist')
    if image is not None and not os.path.isfile(image):
        raise DeployError(f'image {image!r} does not exist')
    if work_dir.exists() and not work_dir.is_dir():
        raise DeployError(f'work dir {str(work_dir)!r} exists and is not a directory')
    inputs = [p for p in (config, checkpoint, image) if p is not None]
    for name in WORK_DIR_OUTPUTS:
        target = work_dir / name
        for path in inputs:
            if os.path.realpath(path) == os.path.realpath(target):
                raise DeployError(f'input {path!r} lies in the work dir as {name}, which '
                                  f'export writes; choose another work dir')
        if target.exists() and not overwrite:
            raise DeployError(f'work dir {str(work_dir)!r} already holds {name}; choose an '
                              f'empty work dir or pass --overwrite')


def sample_image(codebase: str, out: Path, seed: int = 0) -> Path:
    """A real test image written to ``out``: the first held-out handwritten digit of
    rep_mm.datasets.digits' split (classification, 32x32), or the first val scene of
    rep_mm.datasets.digit_scenes (segmentation, detection; 64x64)."""
    import tempfile
    if codebase == 'mmpretrain':
        # one image of the tree prepare_digits writes (same split, same encoding)
        from ..datasets.digits import _encode_png, _load, _split
        images, labels = _load()
        index = int(_split(labels, seed, 360)['test'][0])
        out.write_bytes(_encode_png(images[index], 32))
        return out
    from ..datasets import prepare_digit_scenes
    with tempfile.TemporaryDirectory(prefix='rep_mm_sample_') as tmp:
        prepare_digit_scenes(Path(tmp) / 'scenes', num_train=1, num_val=1, size=64, seed=seed)
        shutil.copyfile(Path(tmp) / 'scenes' / 'images' / 'val' / '00000.png', out)
    return out
