"""Folding swapped blocks back into the stock conv + BN layers, and the stock checkpoint.

OREPA blocks keep ``BN(conv(x, W))`` (the conv gets the generated kernel ``W``, the BN the
block's own statistics); ACB / DBB blocks and blocks already in deploy form fold to one
``(K, b)``: the conv gets ``K``, the BN computes ``y = x + b``
(:func:`rep_mm.fusion.shift_only_batchnorm_`).
"""
import copy
import types
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...fusion import shift_only_batchnorm_
from .swapping import SWAPS_ATTR, Swap, set_submodule

__all__ = ['fold_to_stock', 'stock_state_dict', 'export_stock_checkpoint']


def _stock_pair(block: nn.Module, swap: Swap) -> Tuple[nn.Conv2d, _BatchNorm]:
    """The stock conv and BN that compute what ``block`` computes (module docstring)."""
    ref = next(block.parameters())
    conv = nn.Conv2d(**swap.conv_args).to(device=ref.device, dtype=ref.dtype)
    norm = copy.deepcopy(swap.norm_template).to(device=ref.device)
    norm.train(block.training)
    conv.train(block.training)
    natural = not block.deploy and callable(getattr(block, 'weight_gen', None)) and \
        isinstance(getattr(block, 'bn', None), _BatchNorm)
    if natural:  # OREPA family: BN(conv(x, W)), keep the block's own BN
        conv.weight.copy_(block.weight_gen(torch.float64).to(ref.dtype))
        norm.load_state_dict(block.bn.state_dict())
    else:  # one (K, b): conv K, BN reduced to y = x + b
        kernel, bias = block.equivalent_kernel_bias()
        conv.weight.copy_(kernel.to(ref.dtype))
        shift_only_batchnorm_(norm, bias)
    norm.to(dtype=ref.dtype)
    if conv.bias is not None:
        conv.bias.zero_()
    return conv, norm


@torch.no_grad()
def fold_to_stock(model: nn.Module) -> nn.Module:
    """Turn every swapped block of ``model`` (anywhere inside it) back into stock conv + BN.

    In place; ``model.state_dict()`` then has exactly the keys of the stock model.

    Raises:
        ValueError: no module of ``model`` was swapped by :func:`.swapping.reparam_backbone`.
    """
    holders = [m for m in model.modules() if getattr(m, SWAPS_ATTR, None)]
    if not holders:
        raise ValueError(f'{type(model).__name__} holds no module re-parameterized by '
                         f'rep_mm.integrations.stock_backbones (nothing to fold)')
    for holder in holders:
        for swap in getattr(holder, SWAPS_ATTR):
            conv, norm = _stock_pair(holder.get_submodule(swap.conv), swap)
            set_submodule(holder, swap.conv, conv)
            set_submodule(holder, swap.norm, norm)
        delattr(holder, SWAPS_ATTR)
        if isinstance(holder.__dict__.get('init_weights'), types.MethodType):
            del holder.__dict__['init_weights']
    return model


def stock_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The stock-key state dict of a folded deep copy (``model`` itself is untouched)."""
    return fold_to_stock(copy.deepcopy(model)).state_dict()


def export_stock_checkpoint(model: nn.Module, path, overwrite: bool = False,
                            meta: Optional[dict] = None) -> str:
    """Write ``{'state_dict': stock keys, 'meta': ...}`` atomically; returns the path."""
    from ...io import save_checkpoint_atomic
    state = {k: v.detach().cpu().clone() for k, v in stock_state_dict(model).items()}
    meta = dict(meta or {}, rep_mm_folded=True)
    return save_checkpoint_atomic(dict(state_dict=state, meta=meta), path, overwrite=overwrite)
