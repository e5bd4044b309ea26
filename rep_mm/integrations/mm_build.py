"""Building and unwrapping mm models: one rule for every entry point of rep_mm.

* :func:`build_model`: ``cfg.model`` (or a given model config) built through mmengine's root
  ``MODELS`` registry in the config's ``default_scope``, so ``type='ImageClassifier'`` resolves
  in the config's toolbox and ``type='rep_mm.RepVGG'`` / ``'mmseg.EncoderDecoder'`` resolve by
  their scope. Options cover what mmdeploy does before an export (drop ``pretrained``, fill in
  the config's ``data_preprocessor``, revert ``SyncBatchNorm``, seed the initial weights).
* :func:`unwrap_model`: the model inside an mmengine / torch model wrapper (DDP,
  ``MMDistributedDataParallel``, ...), decided by mmengine's wrapper registry, never by a
  ``.module`` attribute (many plain models have one).
"""
import copy
from typing import Any, Mapping, Optional

import torch
from torch import nn

__all__ = ['build_model', 'unwrap_model']


def unwrap_model(model: nn.Module) -> nn.Module:
    """``model.module`` if ``model`` is a registered model wrapper, else ``model``."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def build_model(cfg: Any, model_cfg: Optional[Mapping[str, Any]] = None, *,
                default_scope: Optional[str] = None, drop_pretrained: bool = False,
                with_data_preprocessor: bool = False, revert_sync_bn: bool = False,
                seed: Optional[int] = None) -> nn.Module:
    """Build ``model_cfg`` (default ``cfg.model``, deep-copied) in ``cfg.default_scope``.

    Args:
        cfg: a loaded mmengine ``Config`` (or mapping) of any toolbox.
        model_cfg: the model config to build instead of ``cfg.model``.
        default_scope: the scope used when the config names none.
        drop_pretrained: remove a top-level ``pretrained`` key (mmdeploy does).
        with_data_preprocessor: fill a missing ``data_preprocessor`` from the config's
            top-level one (mmpretrain / mmseg configs keep it there).
        revert_sync_bn: replace ``SyncBatchNorm`` by ``BatchNorm`` (a single CPU process).
        seed: ``torch.manual_seed(seed)`` just before building (reproducible initial weights).
    """
    from mmengine.registry import MODELS, init_default_scope
    model_cfg = copy.deepcopy(dict(cfg['model'] if model_cfg is None else model_cfg))
    scope = cfg.get('default_scope') or default_scope
    if scope:
        init_default_scope(scope)
    if drop_pretrained:
        model_cfg.pop('pretrained', None)
    if with_data_preprocessor:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.get('data_preprocessor', {})))
    if seed is not None:
        torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    if revert_sync_bn:
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)
    return model
