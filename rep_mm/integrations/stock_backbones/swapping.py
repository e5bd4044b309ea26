"""Swapping a stock backbone's kxk conv-BN pairs for ACB / DBB / OREPA blocks, in place.

Each swap is recorded (:class:`Swap`, in ``module.rep_mm_swaps``) with what
:mod:`.folding` needs to rebuild the stock conv and BN.
"""
import copy
import fnmatch
import types
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...blocks import ACBlock, DiverseBranchBlock, OREPA, OREPALargeConv
from ...blocks.dbb import IdentityBasedConv1x1
from .tracing import example_input as default_example_input
from .tracing import find_conv_bn_pairs

__all__ = ['CONV_TYPES', 'SWAPS_ATTR', 'SwappedNorm', 'Swap', 'set_submodule',
           'reparam_backbone']

CONV_TYPES = ('acb', 'dbb', 'orepa')
SWAPS_ATTR = 'rep_mm_swaps'


class SwappedNorm(nn.Identity):
    """Stands where a stock BatchNorm was: identity, passes ``train(mode)`` to the block."""

    def __init__(self, partner: nn.Module) -> None:
        super().__init__()
        self._partner = [partner]  # a list: not a registered sub-module (no duplicate keys)

    def train(self, mode: bool = True) -> 'SwappedNorm':
        super().train(mode)
        self._partner[0].train(mode)
        return self


@dataclass
class Swap:
    """One replaced pair: where the conv and BN were, and how to rebuild them."""

    conv: str
    norm: str
    conv_args: Dict[str, Any]
    norm_template: _BatchNorm  # a detached copy of the stock BN (type, eps, momentum ...)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` inside ``root``."""
    parent, _, name = path.rpartition('.')
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _why_not(conv: nn.Conv2d, norm: _BatchNorm, conv_type: str) -> Optional[str]:
    """Why this conv-BN pair stays stock (None if it can be swapped)."""
    k = conv.kernel_size
    if type(conv) is not nn.Conv2d:
        return f'{type(conv).__name__} is a Conv2d subclass (its forward may differ)'
    if k[0] != k[1] or k[0] % 2 == 0:
        return f'kernel {k} is not odd and square'
    if conv.padding_mode != 'zeros' or isinstance(conv.padding, str) or \
            conv.padding[0] != conv.padding[1]:
        return f'padding {conv.padding!r} ({conv.padding_mode}) is not symmetric zero padding'
    if conv.stride[0] != conv.stride[1] or conv.dilation[0] != conv.dilation[1]:
        return 'anisotropic stride / dilation'
    if not (norm.affine and norm.track_running_stats):
        return 'BN without affine parameters or running statistics'
    if conv_type == 'dbb' and (conv.dilation[0] != 1 or conv.padding[0] != k[0] // 2):
        return 'DBB needs dilation 1 and padding k // 2'
    return None


def _norm_cfg(norm: _BatchNorm) -> dict:
    kind = 'SyncBN' if isinstance(norm, nn.SyncBatchNorm) else 'BN'
    return dict(type=kind, eps=norm.eps, momentum=norm.momentum)


def _build_block(conv: nn.Conv2d, norm: _BatchNorm, conv_type: str) -> nn.Module:
    """The ``conv_type`` block (with its own BN like ``norm``) that replaces ``conv``."""
    k, s, p, d, g = (conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0],
                     conv.groups)
    args = (conv.in_channels, conv.out_channels, k, s, p)
    cfg = dict(norm_cfg=_norm_cfg(norm))
    if conv_type == 'acb':
        block = ACBlock(*args, dilation=d, groups=g, **cfg)
    elif conv_type == 'dbb':
        block = DiverseBranchBlock(*args, dilation=d, groups=g, **cfg)
    elif k > 3:
        block = OREPALargeConv(*args, dilation=d, groups=g, **cfg)
    else:
        block = OREPA(*args, groups=g, dilation=d, **cfg)
    block.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if not conv.weight.requires_grad:  # frozen stages stay frozen
        block.requires_grad_(False)
    block.train(conv.training)
    return block


def _init_weights_keeping_identity(self) -> None:
    """The stock ``init_weights``, then DBB's identity-based 1x1 convs back at zero (= I)."""
    type(self).init_weights(self)
    with torch.no_grad():
        for m in self.modules():
            if isinstance(m, IdentityBasedConv1x1):
                m.weight.zero_()


def _swap(module: nn.Module, conv_path: str, norm_path: str, conv_type: str) -> Swap:
    """Replace one pair: the block at ``conv_path``, a :class:`SwappedNorm` at ``norm_path``."""
    conv, norm = module.get_submodule(conv_path), module.get_submodule(norm_path)
    block = _build_block(conv, norm, conv_type)
    conv_args = dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                     kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
    template = copy.deepcopy(norm).cpu()
    set_submodule(module, conv_path, block)
    set_submodule(module, norm_path, SwappedNorm(block))
    return Swap(conv_path, norm_path, conv_args, template)


def _skip_reason(module: nn.Module, conv_path: str, norm_path: str, conv_type: str,
                 skip: Sequence[str]) -> Optional[str]:
    """Why the pair stays stock: a ``skip`` pattern, or what the block cannot express."""
    reason = next((f'matches skip pattern {pat!r}' for pat in skip
                   if fnmatch.fnmatchcase(conv_path, pat)), None)
    return reason or _why_not(module.get_submodule(conv_path), module.get_submodule(norm_path),
                              conv_type)


def reparam_backbone(module: nn.Module, conv_type: str = 'orepa', skip: Sequence[str] = (),
                     example_input: Optional[Tensor] = None,
                     example_size: Sequence[int] = (64, 64)) -> nn.Module:
    """Swap the kxk conv-BN pairs of ``module`` for ``conv_type`` blocks, in place.

    Args:
        module: a built backbone (mmdet / mmseg / mmpretrain ResNet, any conv net).
        conv_type: ``'acb'``, ``'dbb'`` or ``'orepa'``.
        skip: glob patterns of conv paths to keep stock (e.g. ``['stem.*']``).
        example_input: the input of the tracing forward pass; default random
            ``(1, C, *example_size)`` with ``C`` the first conv's input channels.
        example_size: spatial size of the default example input. Default (64, 64).

    Returns:
        The same module; ``module.rep_mm_swaps`` lists the swaps (:class:`Swap`) and
        ``module.rep_mm_skipped`` the pairs left stock with the reason.
    """
    if conv_type not in CONV_TYPES:
        raise ValueError(f'conv_type must be one of {CONV_TYPES}, got {conv_type!r}')
    if getattr(module, SWAPS_ATTR, None):
        raise ValueError(f'{type(module).__name__} is already re-parameterized '
                         f'({len(getattr(module, SWAPS_ATTR))} swapped pairs)')
    x = default_example_input(module, example_size) if example_input is None else example_input
    swaps, skipped = [], {}
    for conv_path, norm_path in find_conv_bn_pairs(module, x):
        if module.get_submodule(conv_path).kernel_size == (1, 1):  # only kxk kernels, k > 1
            continue
        reason = _skip_reason(module, conv_path, norm_path, conv_type, skip)
        if reason:
            skipped[conv_path] = reason
        else:
            swaps.append(_swap(module, conv_path, norm_path, conv_type))
    if not swaps:
        raise ValueError(f'no conv-BN pair of {type(module).__name__} could be swapped for '
                         f'{conv_type!r} blocks; skipped: {skipped}')
    setattr(module, SWAPS_ATTR, swaps)
    module.rep_mm_skipped = skipped
    module.rep_mm_conv_type = conv_type
    if conv_type == 'dbb' and callable(getattr(module, 'init_weights', None)):
        module.init_weights = types.MethodType(_init_weights_keeping_identity, module)
    return module
