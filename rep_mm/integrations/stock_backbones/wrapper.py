"""``type='rep_mm.ReparamWrapped'``: a stock backbone config built with its pairs swapped."""
from typing import Sequence

from torch import nn

from ...registry import MODELS
from .swapping import reparam_backbone

__all__ = ['build_reparam_wrapped']


@MODELS.register_module(name='ReparamWrapped')
def build_reparam_wrapped(backbone: dict, conv_type: str = 'orepa', skip: Sequence[str] = (),
                          example_size: Sequence[int] = (64, 64)) -> nn.Module:
    """Config entry ``type='rep_mm.ReparamWrapped'``: build ``backbone``, then swap its pairs.

    Example (an mmdet config)::

        backbone=dict(type='rep_mm.ReparamWrapped', conv_type='orepa',
                      backbone=dict(type='mmdet.ResNet', depth=50, ...))

    The built object IS the stock backbone class (same attribute paths, same outputs API).
    """
    from mmengine.registry import MODELS as ROOT_MODELS
    module = ROOT_MODELS.build(backbone) if not isinstance(backbone, nn.Module) else backbone
    return reparam_backbone(module, conv_type, skip=skip, example_size=example_size)
