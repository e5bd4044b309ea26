"""The deploy-form model config: the registered ``rep_mm.ReparameterizedModel`` builder and
the ``deploy_model.py`` config (``cfg.model`` rewritten to it) that mmdeploy is given.

The builder registers when this module is imported, i.e. on ``import rep_mm.deploy``; the
saved config lists ``rep_mm.deploy`` in ``custom_imports`` so a fresh process rebuilds it.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

from torch import nn

from ..registry import MODELS
from .errors import DeployError

__all__ = ['build_reparameterized_model', 'deploy_model_config', 'saved_model_config',
           'ensure_resize', 'build_like_mmdeploy']


def build_like_mmdeploy(cfg: Any, seed: int) -> nn.Module:
    """Build ``cfg.model`` like mmdeploy (:func:`rep_mm.integrations.mm_build.build_model`):
    the config's ``default_scope`` set, ``pretrained`` dropped, the config's
    ``data_preprocessor`` filled in, weights seeded by ``seed`` and ``SyncBatchNorm``
    reverted. Used by the export and the quantization pipelines."""
    from ..integrations.mm_build import build_model
    return build_model(cfg, drop_pretrained=True, with_data_preprocessor=True,
                       revert_sync_bn=True, seed=seed)


@MODELS.register_module(name='ReparameterizedModel')
def build_reparameterized_model(model_type: str, **kwargs: Any) -> nn.Module:
    """Build ``dict(type=model_type, **kwargs)`` and fold all its re-param blocks.

    The model config of a converted checkpoint: ``dict(type='rep_mm.ReparameterizedModel',
    model_type='mmdet.RetinaNet', backbone=..., ...)``. All other keys stay where the toolbox
    and mmdeploy read them (``decode_head``, ``test_cfg``, ``data_preprocessor`` ...), and the
    built module has exactly the keys of ``converted.pth``.
    """
    from mmengine.registry import MODELS as ROOT_MODELS
    if '.' not in model_type:
        raise DeployError(f'model_type must name its scope (e.g. "mmdet.RetinaNet"), '
                          f'got {model_type!r}')
    from ..reparam import reparameterize
    model = ROOT_MODELS.build(dict(type=model_type, **kwargs))
    reparameterize(model)
    return model


def deploy_model_config(model_cfg: Dict[str, Any], default_scope: Optional[str]) -> Dict[str, Any]:
    """``cfg.model`` rewritten to build the deploy form (:func:`build_reparameterized_model`)."""
    model_cfg = copy.deepcopy(dict(model_cfg))
    model_type = model_cfg.pop('type')
    if not isinstance(model_type, str):
        raise DeployError(f'cfg.model.type must be a registered name, got {model_type!r}')
    if '.' not in model_type:
        if not default_scope:
            raise DeployError(f'cfg.model.type {model_type!r} has no scope and the config '
                              f'sets no default_scope; write e.g. "mmdet.{model_type}"')
        model_type = f'{default_scope}.{model_type}'
    return dict(type='rep_mm.ReparameterizedModel', model_type=model_type, **model_cfg)


def saved_model_config(cfg: Any) -> Any:
    """A copy of the whole config ``cfg`` whose model is the deploy form, importing the builder.

    ``custom_imports`` gains ``rep_mm`` and ``rep_mm.deploy`` (kept once, in order) and
    ``allow_failed_imports`` defaults to False.
    """
    deploy_model_cfg = cfg.copy()
    deploy_model_cfg.model = deploy_model_config(cfg.model, cfg.get('default_scope'))
    # the builder registers on import of rep_mm.deploy: let the saved config import it
    imports = dict(deploy_model_cfg.get('custom_imports') or dict(imports=[]))
    imports['imports'] = list(imports.get('imports', [])) + ['rep_mm', 'rep_mm.deploy']
    imports['imports'] = list(dict.fromkeys(imports['imports']))
    imports.setdefault('allow_failed_imports', False)
    deploy_model_cfg.custom_imports = imports
    return deploy_model_cfg


def ensure_resize(model_cfg: Any, codebase: str, deploy_cfg: Any) -> bool:
    """Segmentors: put a ``Resize`` to the static input shape into ``test_pipeline``.

    mmdeploy resizes to the deploy config's ``input_shape`` only by rewriting an existing
    ``Resize``, and its SDK meta for mmseg asserts one as the second transform; without it the
    graph's static shape would be the one of the sample image. Returns True if one was added.
    """
    from mmdeploy.utils import get_input_shape
    shape = get_input_shape(deploy_cfg)
    pipeline = model_cfg.get('test_pipeline')
    if codebase != 'mmseg' or shape is None or not pipeline:
        return False
    if any(step.get('type') == 'Resize' for step in pipeline):
        return False
    # mmdeploy's input_shape is [W, H]; mmcv's Resize takes scale=(W, H)
    pipeline.insert(1, dict(type='Resize', scale=tuple(shape), keep_ratio=False))
    model_cfg.test_pipeline = pipeline
    return True
