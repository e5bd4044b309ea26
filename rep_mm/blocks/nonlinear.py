"""Resolve the ``nonlinear`` argument of the ACB / DBB / OREPA blocks into a module."""
from typing import Union

from torch import nn

Nonlinear = Union[None, str, dict, nn.Module]


def build_nonlinear(nonlinear: Nonlinear) -> nn.Module:
    """The activation applied after a block's branch sum.

    Accepts what the original constructors take (an ``nn.Module`` such as ``nn.ReLU()``, or None
    for none) and what mm configs can express: an mm ``act_cfg`` dict (``dict(type='ReLU')``) or
    its type name (``'ReLU'``).
    """
    if nonlinear is None:
        return nn.Identity()
    if isinstance(nonlinear, nn.Module):
        return nonlinear
    if isinstance(nonlinear, str):
        nonlinear = dict(type=nonlinear)
    if isinstance(nonlinear, dict):
        from mmcv.cnn import build_activation_layer
        return build_activation_layer(dict(nonlinear))
    raise TypeError(f'nonlinear must be None, an nn.Module, an act_cfg dict or a type name such as '
                    f"'ReLU', got {type(nonlinear).__name__}")
