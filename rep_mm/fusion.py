"""Fusion math: pure tensor functions that fold linear branches into one kernel and bias.

Every re-parameterizable block in rep_mm builds its deploy-time operator from these functions
and nothing else, so each equation lives (and is tested) exactly once.

Conventions (PyTorch's): a conv kernel has shape ``(C_out, C_in // groups, k_h, k_w)`` and a
bias has shape ``(C_out,)``. A *branch* is a ``(kernel, bias)`` pair; two branches that see the
same input with the same stride and aligned centres add up to one branch:
``conv(x, K1) + b1 + conv(x, K2) + b2 = conv(x, K1 + K2) + (b1 + b2)``.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'KernelBias', 'fusion_dtype', 'bn_scale_shift', 'fuse_bn', 'pad_kernel', 'identity_kernel',
    'avg_pool_kernel', 'sum_branches', 'conv_to_fc',
]

KernelBias = Tuple[Tensor, Tensor]
Size2 = Union[int, Sequence[int]]


def _pair(size: Size2) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f'expected an int or a pair of ints, got {size!r}')
    return size  # type: ignore[return-value]


def fusion_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to fold in: at least float32 (fp16/bf16 are folded in fp32, then cast back)."""
    return torch.promote_types(dtype, torch.float32)


def bn_scale_shift(bn: _BatchNorm, dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` of a BatchNorm in inference form.

    ``BN(y) = gamma * (y - mu) / sqrt(var + eps) + beta = scale * y + shift`` with
    ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mu * scale``. Uses the running
    statistics whatever the module's mode, so folding works in train and eval mode alike.
    Differentiable with respect to ``gamma`` and ``beta``.
    """
    if not isinstance(bn, _BatchNorm):
        raise TypeError(f'expected a BatchNorm module (any _BatchNorm, e.g. BN or SyncBN), '
                        f'got {type(bn).__name__}')
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError('cannot fold a BatchNorm built with track_running_stats=False: it has no '
                         'running statistics, so it is not a fixed linear map at inference')
    dtype = dtype or fusion_dtype(bn.running_var.dtype)
    var = bn.running_var.to(dtype)
    mean = bn.running_mean.to(dtype)
    gamma = bn.weight.to(dtype) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.to(dtype) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fuse_bn(kernel: Tensor, bn: _BatchNorm, bias: Optional[Tensor] = None,
            outputs_per_feature: int = 1) -> KernelBias:
    """Fold ``BN(conv(x, kernel) + bias)`` into one conv: returns ``(kernel', bias')``.

    ``kernel' = kernel * scale[:, None, None, None]`` and ``bias' = shift + bias * scale`` with
    ``(scale, shift) = bn_scale_shift(bn)``. ``kernel`` may be any shape whose first dimension is
    the output channels (conv kernels, FC weights). When one BN feature normalises
    ``outputs_per_feature`` consecutive outputs (RepMLP's ``fc3_bn``: one feature per share-set
    of ``h * w`` FC outputs), scale and shift are repeated that often.
    Result dtype: ``fusion_dtype(kernel.dtype)``.
    """
    dtype = fusion_dtype(kernel.dtype)
    scale, shift = bn_scale_shift(bn, dtype)
    if outputs_per_feature != 1:
        scale = scale.repeat_interleave(outputs_per_feature)
        shift = shift.repeat_interleave(outputs_per_feature)
    if kernel.shape[0] != scale.shape[0]:
        raise ValueError(f'kernel has {kernel.shape[0]} output channels but the BatchNorm has '
                         f'{scale.shape[0] // outputs_per_feature} features '
                         f'(x {outputs_per_feature} outputs each)')
    fused_kernel = kernel.to(dtype) * scale.reshape(-1, *([1] * (kernel.dim() - 1)))
    fused_bias = shift if bias is None else shift + bias.to(dtype) * scale
    return fused_kernel, fused_bias


def pad_kernel(kernel: Tensor, size: Size2) -> Tensor:
    """Zero-pad a ``(.., k_h, k_w)`` kernel symmetrically to ``(.., K_h, K_w)``.

    A smaller kernel placed at the centre of a larger one computes the same conv when the larger
    conv's padding exceeds the smaller one's by ``(K - k) // 2`` (times the dilation), so
    ``K - k`` must be even on both axes.
    """
    target_h, target_w = _pair(size)
    k_h, k_w = kernel.shape[-2:]
    dh, dw = target_h - k_h, target_w - k_w
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f'cannot centre a {k_h}x{k_w} kernel in {target_h}x{target_w}: the target '
                         'must be at least as large and differ by an even number on each axis')
    if dh == 0 and dw == 0:
        return kernel
    return nn.functional.pad(kernel, [dw // 2, dw // 2, dh // 2, dh // 2])


def identity_kernel(channels: int, groups: int = 1, size: Size2 = 1, *,
                    dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> Tensor:
    """The kernel of ``y = x`` as a grouped conv: shape ``(C, C // groups, K_h, K_w)``.

    Output channel ``c`` lies in group ``c // (C / groups)`` where it sees input channel
    ``c % (C / groups)`` of that group: that entry's centre tap is 1, all else 0.
    """
    if channels % groups:
        raise ValueError(f'channels ({channels}) must be divisible by groups ({groups})')
    k_h, k_w = _pair(size)
    if k_h % 2 == 0 or k_w % 2 == 0:
        raise ValueError(f'an identity kernel needs odd sizes to have a centre, got {k_h}x{k_w}')
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k_h, k_w, dtype=dtype, device=device)
    rows = torch.arange(channels, device=device)
    kernel[rows, rows % per_group, k_h // 2, k_w // 2] = 1
    return kernel


def avg_pool_kernel(channels: int, groups: int, size: Size2, *,
                    dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> Tensor:
    """The kernel of a ``k_h x k_w`` average pool (zeros counted) as a grouped conv.

    ``AvgPool(x)[c] = sum over the window of x[c] / (k_h * k_w)``, i.e. the identity kernel's
    pattern with every tap of the window equal to ``1 / (k_h * k_w)``.
    """
    if channels % groups:
        raise ValueError(f'channels ({channels}) must be divisible by groups ({groups})')
    k_h, k_w = _pair(size)
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k_h, k_w, dtype=dtype, device=device)
    rows = torch.arange(channels, device=device)
    kernel[rows, rows % per_group] = 1.0 / (k_h * k_w)
    return kernel


def sum_branches(branches: Iterable[KernelBias], size: Optional[Size2] = None) -> KernelBias:
    """Add branches that share input, stride and centre: ``(sum of padded kernels, sum of biases)``.

    Kernels are centre-padded to ``size`` (default: the largest kernel among the branches).
    """
    branches = list(branches)
    if not branches:
        raise ValueError('sum_branches needs at least one branch')
    if size is None:
        size = (max(k.shape[-2] for k, _ in branches), max(k.shape[-1] for k, _ in branches))
    kernel = sum(pad_kernel(k, size) for k, _ in branches)
    bias = sum(b for _, b in branches)
    return kernel, bias


def conv_to_fc(kernel: Tensor, bias: Tensor, height: int, width: int) -> KernelBias:
    """The FC layer equal to a stride-1 "same" grouped conv on a fixed ``height x width`` map.

    ``kernel``: ``(G, 1, k_h, k_w)`` (one channel per group, as RepMLP's local perceptron over
    ``G`` share-sets), ``bias``: ``(G,)``. Flattening each group's map to ``P = h * w`` values,
    the conv is linear, so ``conv(x)[g] = W_g @ x[g] + b_g`` with ``W_g`` of shape ``(P, P)``.
    Column ``i`` of ``W_g`` is the conv applied to the ``i``-th unit image, so convolving the
    ``P`` unit images at once gives every ``W_g`` ("identity-image trick").

    Returns ``(weight, bias)`` of shape ``(G * P, P)`` and ``(G * P,)``: the weight of a grouped
    1x1 conv / FC with ``G`` groups over ``G * P`` features (row ``g * P + o`` is output ``o``
    of group ``g``), the layout of RepMLP's ``fc3``.
    """
    groups, per_group, k_h, k_w = kernel.shape
    if per_group != 1:
        raise ValueError(f'conv_to_fc expects one input channel per group, got kernel shape '
                         f'{tuple(kernel.shape)}')
    if k_h % 2 == 0 or k_w % 2 == 0:
        raise ValueError(f'a "same" conv needs odd kernel sizes, got {k_h}x{k_w}')
    positions = height * width
    unit_images = torch.eye(positions, dtype=kernel.dtype, device=kernel.device)
    unit_images = unit_images.reshape(positions, 1, height, width).expand(-1, groups, -1, -1)
    responses = nn.functional.conv2d(unit_images, kernel, padding=(k_h // 2, k_w // 2),
                                     groups=groups)            # (P inputs, G, h, w outputs)
    weight = responses.reshape(positions, groups * positions).t()  # (G * P outputs, P inputs)
    return weight, bias.repeat_interleave(positions)
