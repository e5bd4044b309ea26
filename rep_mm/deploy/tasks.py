"""Supported toolboxes: codebase -> mmdeploy task and the deploy config shipped for it."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import DeployError

__all__ = ['DEPLOY_CONFIG_DIR', 'TASKS', 'deploy_config_for', 'codebase_of']

DEPLOY_CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'deploy'
# codebase -> (task name, deploy config shipped in configs/deploy)
TASKS = {
    'mmpretrain': ('classification', 'classification_onnxruntime_static.py'),
    'mmseg': ('segmentation', 'segmentation_onnxruntime_static.py'),
    'mmdet': ('detection', 'detection_onnxruntime_static.py'),
}


def deploy_config_for(codebase: str) -> Path:
    """The shipped onnxruntime static deploy config of a codebase (mmpretrain/mmseg/mmdet)."""
    if codebase not in TASKS:
        raise DeployError(f'no deploy config for codebase {codebase!r}; supported: '
                          f'{", ".join(TASKS)}')
    return DEPLOY_CONFIG_DIR / TASKS[codebase][1]


def codebase_of(model: nn.Module) -> str:
    """``mmpretrain`` / ``mmseg`` / ``mmdet``: the toolbox whose model class ``model`` is."""
    for cls in type(model).__mro__:
        root = cls.__module__.split('.')[0]
        if root in TASKS:
            return root
    raise DeployError(f'{type(model).__name__} is not an mmpretrain classifier, mmseg '
                      f'segmentor or mmdet detector; rep-mm export supports those three')
