"""Re-param ANY backbone: train a stock model's kxk conv-BN pairs as ACB / DBB / OREPA blocks and
fold them back into the stock layers, so the deploy checkpoint has exactly the stock keys.

Training form (:func:`reparam_backbone`, or ``type='rep_mm.ReparamWrapped'`` in a config): a
forward pass on a small example input finds every BatchNorm whose input is the output of a
``Conv2d`` (hooks, no knowledge of the backbone's code). Each such conv with an odd square
kernel ``k > 1`` is replaced by a re-param block that contains its own BN, and the BN by a
:class:`SwappedNorm` placeholder (identity that forwards ``train()`` / ``eval()`` to the block's
BNs, so the stock ``_freeze_stages`` / ``norm_eval`` logic still reaches them). ``conv_type``:

* ``'acb'``: :class:`~rep_mm.blocks.ACBlock`; ``'dbb'``: :class:`~rep_mm.blocks.DiverseBranchBlock`
  (only ``dilation 1`` and ``padding k // 2``; other convs stay stock and are listed as skipped);
* ``'orepa'``: :class:`~rep_mm.blocks.OREPA` for ``k = 3``, the deep linear stem
  :class:`~rep_mm.blocks.OREPALargeConv` for ``k > 3`` (ResNet's 7x7 stem), as in OREPA's ResNets.

Stock form (:func:`fold_to_stock`, :func:`export_stock_checkpoint`): every block becomes the
original ``Conv2d`` + BatchNorm again. OREPA blocks compute ``BN(conv(x, W))``, so the conv gets
the generated kernel ``W`` and the BN keeps the block's own statistics (bit-for-bit the training
computation). ACB / DBB blocks (and blocks already converted by :func:`rep_mm.reparameterize`)
fold to one ``(K, b)``: the conv gets ``K`` and the BN becomes ``y = x + b`` with
``running_mean = 0``, ``running_var = 1``, ``weight = sqrt(1 + eps)``, ``bias = b``. A stock conv
bias (conv followed by BN) is set to zero. The result loads into the stock toolbox model with
``strict=True`` and needs no rep_mm at all.

Limits: the conv's output must feed only its BN (true for conv-BN pairs in ResNets and mmcv
``ConvModule``); a conv or BN run twice per forward is refused. The stock init (``Kaiming`` on
``Conv2d``) also reaches the blocks' inner convs; DBB's identity-based 1x1 convs are reset to
zero after ``init_weights()``; ``zero_init_residual`` does not reach the block's BN.
"""
import argparse
import copy
import fnmatch
import math
import sys
import types
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..blocks import ACBlock, DiverseBranchBlock, OREPA, OREPALargeConv
from ..blocks.dbb import IdentityBasedConv1x1
from ..cli.args import add_overwrite, add_unsafe_load
from ..registry import MODELS

__all__ = ['CONV_TYPES', 'SwappedNorm', 'Swap', 'find_conv_bn_pairs', 'reparam_backbone',
           'build_reparam_wrapped', 'fold_to_stock', 'stock_state_dict',
           'export_stock_checkpoint']

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


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition('.')
    setattr(_get(root, parent) if parent else root, name, module)


def _example_input(module: nn.Module, size: Sequence[int]) -> Tensor:
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f'{type(module).__name__} has no Conv2d: nothing to re-parameterize')
    return torch.randn(1, first.in_channels, *size, dtype=first.weight.dtype,
                       device=first.weight.device)


@torch.no_grad()
def find_conv_bn_pairs(module: nn.Module, example_input: Tensor) -> List[Tuple[str, str]]:
    """``[(conv path, BN path)]``: BatchNorms whose input tensor IS a ``Conv2d``'s output.

    Found with forward hooks during one eval-mode forward pass on ``example_input``.

    Raises:
        ValueError: a paired conv or BN runs more than once per forward (shared module).
    """
    names = {id(m): n for n, m in module.named_modules()}
    outputs: Dict[int, Tuple[str, Tensor]] = {}
    calls: Counter = Counter()
    pairs: List[Tuple[str, str]] = []

    def after_conv(conv, _, out):
        calls[names[id(conv)]] += 1
        outputs[id(out)] = (names[id(conv)], out)

    def before_norm(norm, inputs):
        calls[names[id(norm)]] += 1
        hit = outputs.get(id(inputs[0]))
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], names[id(norm)]))

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(after_conv))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(before_norm))
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        module(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode
    shared = [n for pair in pairs for n in pair if calls[n] != 1]
    if shared:
        raise ValueError(f'modules {sorted(set(shared))} run more than once per forward; a '
                         f'shared conv-BN pair cannot be swapped for one re-param block')
    return pairs


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
    x = _example_input(module, example_size) if example_input is None else example_input
    swaps, skipped = [], {}
    for conv_path, norm_path in find_conv_bn_pairs(module, x):
        conv, norm = _get(module, conv_path), _get(module, norm_path)
        if conv.kernel_size == (1, 1):  # by design: only kxk kernels (k > 1) are swapped
            continue
        reason = next((f'matches skip pattern {pat!r}' for pat in skip
                       if fnmatch.fnmatchcase(conv_path, pat)), None)
        reason = reason or _why_not(conv, norm, conv_type)
        if reason:
            skipped[conv_path] = reason
            continue
        block = _build_block(conv, norm, conv_type)
        conv_args = dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                         kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                         dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
        template = copy.deepcopy(norm).cpu()
        _set(module, conv_path, block)
        _set(module, norm_path, SwappedNorm(block))
        swaps.append(Swap(conv_path, norm_path, conv_args, template))
    if not swaps:
        raise ValueError(f'no conv-BN pair of {type(module).__name__} could be swapped for '
                         f'{conv_type!r} blocks; skipped: {skipped}')
    setattr(module, SWAPS_ATTR, swaps)
    module.rep_mm_skipped = skipped
    module.rep_mm_conv_type = conv_type
    if conv_type == 'dbb' and callable(getattr(module, 'init_weights', None)):
        module.init_weights = types.MethodType(_init_weights_keeping_identity, module)
    return module


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
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
        norm.weight.fill_(math.sqrt(1.0 + norm.eps))
        norm.bias.copy_(bias.to(norm.bias.dtype))
    norm.to(dtype=ref.dtype)
    if conv.bias is not None:
        conv.bias.zero_()
    return conv, norm


@torch.no_grad()
def fold_to_stock(model: nn.Module) -> nn.Module:
    """Turn every swapped block of ``model`` (anywhere inside it) back into stock conv + BN.

    In place; ``model.state_dict()`` then has exactly the keys of the stock model.
    """
    holders = [m for m in model.modules() if getattr(m, SWAPS_ATTR, None)]
    if not holders:
        raise ValueError(f'{type(model).__name__} holds no module re-parameterized by '
                         f'rep_mm.integrations.stock_backbones (nothing to fold)')
    for holder in holders:
        for swap in getattr(holder, SWAPS_ATTR):
            conv, norm = _stock_pair(_get(holder, swap.conv), swap)
            _set(holder, swap.conv, conv)
            _set(holder, swap.norm, norm)
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
    from ..io.checkpoint import save_checkpoint_atomic
    state = {k: v.detach().cpu().clone() for k, v in stock_state_dict(model).items()}
    meta = dict(meta or {}, rep_mm_folded=True)
    return save_checkpoint_atomic(dict(state_dict=state, meta=meta), path, overwrite=overwrite)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: fold a training checkpoint of a ``ReparamWrapped`` config into a stock checkpoint."""
    parser = argparse.ArgumentParser(
        prog='python -m rep_mm.integrations.stock_backbones',
        description='Fold a checkpoint trained with rep_mm.ReparamWrapped blocks into the stock '
                    'layers; the output loads into the stock config with strict=True.')
    parser.add_argument('config', help='the training config (with rep_mm.ReparamWrapped)')
    parser.add_argument('checkpoint', help='training checkpoint (Runner or plain state dict)')
    parser.add_argument('out', help='output checkpoint (stock keys)')
    add_overwrite(parser, 'replace an existing output')
    add_unsafe_load(parser)
    args = parser.parse_args(argv)
    import os

    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope

    from ..io.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file
    from ..io.files import check_output_path, load_config_file
    size = os.path.getsize(args.checkpoint) if os.path.isfile(args.checkpoint) else None
    try:  # every input and the destination, before any work
        if not os.path.isfile(args.checkpoint):
            raise CheckpointError(f'checkpoint {args.checkpoint!r} does not exist or is not a '
                                  f'file')
        notes = check_output_path(args.out, (args.checkpoint, args.config), args.overwrite,
                                  'the folded checkpoint', size_hint=size)
        cfg = load_config_file(args.config)
        if 'model' not in cfg:
            raise ValueError(f'config {args.config!r} has no `model` field')
        state = extract_state_dict(load_checkpoint_file(args.checkpoint, args.unsafe_load))
    except (CheckpointError, ValueError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    for note in notes:
        print(f'note: {note}', file=sys.stderr)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = ROOT_MODELS.build(cfg.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # torch's missing / unexpected / size-mismatch report
        print(f'error: checkpoint {args.checkpoint!r} does not fit the model of '
              f'{args.config!r}: {" ".join(str(error).split())[:600]}', file=sys.stderr)
        return 2
    export_stock_checkpoint(model.eval(), args.out, overwrite=args.overwrite,
                            meta=dict(config=args.config, source=args.checkpoint))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
