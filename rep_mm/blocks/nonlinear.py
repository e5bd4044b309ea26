"""Resolve a block's activation argument (``act_cfg`` or the official ``nonlinear``) to a module."""
from typing import Union

from torch import nn

Nonlinear = Union[None, str, dict, nn.Module]


def build_nonlinear(nonlinear: Nonlinear, name: str = 'nonlinear') -> nn.Module:
    """The activation applied after a block's branch sum.

    Accepts an mm ``act_cfg`` dict (``dict(type='ReLU')``) or its type name (``'ReLU'``), None
    for none (``nn.Identity``), and what the original ACB / DBB / OREPA constructors take as
    ``nonlinear`` (an ``nn.Module`` such as ``nn.ReLU()``). ``name`` is the argument's name in
    the error message.
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
    raise TypeError(f'{name} must be None, an nn.Module, an act_cfg dict or a type name such as '
                    f"'ReLU', got {type(nonlinear).__name__}")
