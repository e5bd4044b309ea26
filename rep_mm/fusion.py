"""Fusion math: pure tensor functions that fold linear branches into one kernel and bias.

Every re-parameterizable block in rep_mm builds its deploy-time operator from these functions
and nothing else, so each equation lives (and is tested) exactly once.

Conventions (PyTorch's): a conv kernel has shape ``(C_out, C_in // groups, k_h, k_w)`` and a
bias has shape ``(C_out,)``. A *branch* is a ``(kernel, bias)`` pair; two branches that see the
same input with the same stride and aligned centres add up to one branch:
``conv(x, K1) + b1 + conv(x, K2) + b2 = conv(x, K1 + K2) + (b1 + b2)``.

Topics, in order: dtypes; BatchNorm; constant kernels (identity, averaging); per-channel
scales; parallel branches (padding, sums); sequential composition (1x1 -> kxk, 1x1 ->
depthwise, kxk -> kxk, depthwise -> 1x1); CSLA kernels; conv -> FC.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    # types and dtypes
    'KernelBias', 'fusion_dtype',
    # BatchNorm
    'bn_scale_shift', 'fuse_bn', 'fuse_bn_statistics', 'shift_only_batchnorm_',
    'identity_batchnorm_',
    # constant kernels
    'identity_kernel', 'channel_identity', 'avg_pool_kernel',
    # per-channel scales
    'scale_output_channels',
    # parallel branches
    'pad_kernel', 'sum_branches',
    # sequential composition
    'compose_1x1_kxk', 'compose_1x1_depthwise', 'compose_kernels', 'depthwise_separable_kernel',
    # CSLA (RepOptimizer) kernels
    'csla_kernel',
    # conv -> FC
    'conv_to_fc',
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


def _check_groups(name: str, channels: int, groups: int) -> None:
    if channels % groups:
        raise ValueError(f'{name} ({channels}) must be divisible by groups ({groups})')


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------

def fusion_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to fold in: at least float32 (fp16/bf16 are folded in fp32, then cast back)."""
    return torch.promote_types(dtype, torch.float32)


# ---------------------------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------------------------

def bn_scale_shift(bn: _BatchNorm, dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)``, each ``(C,)``, of a BatchNorm in inference form.

    ``BN(y) = gamma * (y - mu) / sqrt(var + eps) + beta = scale * y + shift`` with
    ``scale = gamma / sqrt(var + eps)`` (the BN's gain) and ``shift = beta - mu * scale``
    (``gamma = 1``, ``beta = 0`` without affine parameters). Uses the running statistics
    whatever the module's mode, so folding works in train and eval mode alike. Differentiable
    with respect to ``gamma`` and ``beta``. Result dtype: ``dtype``, default
    ``fusion_dtype(running_var.dtype)``.
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
    the output channels (conv kernels ``(C_out, C_in // g, k_h, k_w)``, FC weights); ``bias``
    is ``(C_out,)`` or None. When one BN feature normalises ``outputs_per_feature`` consecutive
    outputs (RepMLP's ``fc3_bn``: one feature per share-set of ``h * w`` FC outputs), scale and
    shift are repeated that often. Result dtype: ``fusion_dtype(kernel.dtype)``.
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
    fused_kernel = scale_output_channels(kernel.to(dtype), scale)
    fused_bias = shift if bias is None else shift + bias.to(dtype) * scale
    return fused_kernel, fused_bias


def fuse_bn_statistics(kernel: Tensor, bias: Tensor, mean: Tensor, var: Tensor,
                       gamma: Tensor, beta: Tensor, eps: float) -> KernelBias:
    """Fold a BatchNorm given by its statistics and affine parameters into the conv before it.

    ``gamma * (conv(x, K) + b - mean) / sqrt(var + eps) + beta = conv(x, K') + b'`` with
    ``t = gamma / sqrt(var + eps)``, ``K' = K * t[:, None, None, None]`` and
    ``b' = beta + (b - mean) * t``. ``kernel``: ``(C_out, ...)``; ``bias``, ``mean``, ``var``,
    ``gamma``, ``beta``: ``(C_out,)``. Computed in the inputs' dtype and differentiable in all of
    them: the form QAT fake-quantizes when ``mean`` / ``var`` are the batch's statistics
    (:func:`fuse_bn` folds a module's running statistics, in :func:`fusion_dtype`).
    """
    scale = gamma / torch.sqrt(var + eps)
    return scale_output_channels(kernel, scale), beta + (bias - mean) * scale


@torch.no_grad()
def shift_only_batchnorm_(norm: _BatchNorm, bias: Tensor) -> _BatchNorm:
    """Set ``norm`` in place so that in eval mode it computes ``y = x + bias`` per channel.

    ``running_mean = 0``, ``running_var = 1``, ``gamma = sqrt(1 + eps)`` and ``beta = bias``
    (``(C,)``, cast to the norm's dtype): then ``BN(x) = gamma * (x - 0) / sqrt(1 + eps) +
    beta = x + bias``, the form a fused ``(kernel, bias)`` takes as a bias-free conv followed
    by a stock BatchNorm. Returns ``norm``.

    Raises:
        ValueError: ``norm`` has no affine parameters or no running statistics, or ``bias``
            is not ``(C,)``.
    """
    if norm.weight is None or norm.bias is None or norm.running_mean is None or \
            norm.running_var is None:
        raise ValueError(f'shift_only_batchnorm_ needs a BatchNorm with affine parameters and '
                         f'running statistics, got {norm}')
    if tuple(bias.shape) != tuple(norm.bias.shape):
        raise ValueError(f'bias must have shape {tuple(norm.bias.shape)} (one value per '
                         f'channel), got {tuple(bias.shape)}')
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0)
    norm.weight.fill_(math.sqrt(1.0 + norm.eps))
    norm.bias.copy_(bias.to(norm.bias.dtype))
    return norm


@torch.no_grad()
def identity_batchnorm_(norm: _BatchNorm, mean: Tensor, var: Tensor) -> _BatchNorm:
    """Set ``norm`` in place to the statistics ``(mean, var)`` of its input, with the affine
    parameters that make it the identity in eval mode.

    ``running_mean = mean``, ``running_var = var``, ``gamma = sqrt(var + eps)`` and
    ``beta = mean`` (each ``(C,)``, cast to the norm's dtype): then ``BN(x) = gamma (x - mean)
    / sqrt(var + eps) + beta = x``. A BN inserted after a fused conv this way leaves the model's
    function unchanged while its statistics describe the real activations (the starting point of
    fine-tuning or QAT of a converted model). Returns ``norm``.

    Raises:
        ValueError: ``norm`` has no affine parameters or no running statistics, or ``mean`` /
            ``var`` are not ``(C,)``.
    """
    if norm.weight is None or norm.bias is None or norm.running_mean is None or \
            norm.running_var is None:
        raise ValueError(f'identity_batchnorm_ needs a BatchNorm with affine parameters and '
                         f'running statistics, got {norm}')
    for name, value in (('mean', mean), ('var', var)):
        if tuple(value.shape) != tuple(norm.bias.shape):
            raise ValueError(f'{name} must have shape {tuple(norm.bias.shape)} (one value per '
                             f'channel), got {tuple(value.shape)}')
    norm.running_mean.copy_(mean.to(norm.running_mean.dtype))
    norm.running_var.copy_(var.to(norm.running_var.dtype))
    norm.weight.copy_(torch.sqrt(var + norm.eps).to(norm.weight.dtype))
    norm.bias.copy_(mean.to(norm.bias.dtype))
    return norm


# ---------------------------------------------------------------------------------------------
# Constant kernels
# ---------------------------------------------------------------------------------------------

def identity_kernel(channels: int, groups: int = 1, size: Size2 = 1, *,
                    dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> Tensor:
    """The kernel of ``y = x`` as a grouped conv: shape ``(C, C // groups, K_h, K_w)``.

    Output channel ``c`` lies in group ``c // (C / groups)`` where it sees input channel
    ``c % (C / groups)`` of that group: that entry's centre tap is 1, all else 0.
    """
    _check_groups('channels', channels, groups)
    k_h, k_w = _pair(size)
    if k_h % 2 == 0 or k_w % 2 == 0:
        raise ValueError(f'an identity kernel needs odd sizes to have a centre, got {k_h}x{k_w}')
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k_h, k_w, dtype=dtype, device=device)
    rows = torch.arange(channels, device=device)
    kernel[rows, rows % per_group, k_h // 2, k_w // 2] = 1
    return kernel


def channel_identity(out_channels: int, in_per_group: int, *, dtype: torch.dtype = torch.float32,
                     device: Optional[torch.device] = None) -> Tensor:
    """A grouped 1x1 kernel ``(C_out, C_in // groups, 1, 1)`` copying input ``c % (C_in/g)``.

    Output channel ``c`` gets a 1 at input ``c % in_per_group`` of its group. With
    ``C_out == C_in`` it is :func:`identity_kernel` of size 1; with ``C_out = m * C_in`` it copies
    each input of a group ``m`` times (DBB / OREPA's identity-based 1x1 with internal channels).
    """
    kernel = torch.zeros(out_channels, in_per_group, 1, 1, dtype=dtype, device=device)
    rows = torch.arange(out_channels, device=device)
    kernel[rows, rows % in_per_group] = 1
    return kernel


def avg_pool_kernel(channels: int, groups: int, size: Size2, *,
                    dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> Tensor:
    """The kernel of a ``k_h x k_w`` average pool (zeros counted) as a grouped conv:
    ``(C, C // groups, k_h, k_w)``.

    ``AvgPool(x)[c] = sum over the window of x[c] / (k_h * k_w)``, i.e. the identity kernel's
    pattern with every tap of the window equal to ``1 / (k_h * k_w)``. ``avg_pool_kernel(1, 1,
    k)[0, 0]`` is the ``k x k`` averaging filter itself.
    """
    _check_groups('channels', channels, groups)
    k_h, k_w = _pair(size)
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k_h, k_w, dtype=dtype, device=device)
    rows = torch.arange(channels, device=device)
    kernel[rows, rows % per_group] = 1.0 / (k_h * k_w)
    return kernel


# ---------------------------------------------------------------------------------------------
# Per-channel scales
# ---------------------------------------------------------------------------------------------

def scale_output_channels(kernel: Tensor, scale: Tensor) -> Tensor:
    """Fold a per-output-channel scale after a conv / FC into its kernel.

    ``s[o] * conv(x, K)[o] = conv(x, K')[o]`` with ``K'[o] = s[o] * K[o]``. ``kernel``: any
    shape whose first dimension is the outputs ``O`` (e.g. ``(O, C // g, k_h, k_w)``);
    ``scale``: ``O`` values (cast to ``kernel.dtype``). Used for BN gains, CSLA / Hyper-Search
    scale layers and OREPA's branch scales. Returns ``kernel.shape``.
    """
    return kernel * scale.to(kernel.dtype).reshape(-1, *([1] * (kernel.dim() - 1)))


# ---------------------------------------------------------------------------------------------
# Parallel branches
# ---------------------------------------------------------------------------------------------

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


def sum_branches(branches: Iterable[KernelBias], size: Optional[Size2] = None) -> KernelBias:
    """Add branches that share input, stride and centre: ``(sum of padded kernels, sum of biases)``.

    ``sum_i conv(x, K_i) + b_i = conv(x, sum_i pad(K_i)) + sum_i b_i``; kernels
    ``(C_out, C_in // g, k_h, k_w)`` are centre-padded to ``size`` (default: the largest kernel
    among the branches), biases are ``(C_out,)``.
    """
    branches = list(branches)
    if not branches:
        raise ValueError('sum_branches needs at least one branch')
    if size is None:
        size = (max(k.shape[-2] for k, _ in branches), max(k.shape[-1] for k, _ in branches))
    kernel = sum(pad_kernel(k, size) for k, _ in branches)
    bias = sum(b for _, b in branches)
    return kernel, bias


# ---------------------------------------------------------------------------------------------
# Sequential composition (DBB / OREPA)
# ---------------------------------------------------------------------------------------------

def compose_1x1_kxk(first: Tensor, second: Tensor, groups: int = 1,
                    first_bias: Optional[Tensor] = None) -> KernelBias:
    """One kxk conv equal to a grouped 1x1 conv followed by a grouped kxk conv.

    ``first``: ``(D, C // g, 1, 1)`` with bias ``first_bias`` ``(D,)`` (default 0);
    ``second``: ``(O, D // g, k_h, k_w)`` without bias. Within group ``j``,
    ``K[o, c] = sum_d second[o, d] * first[d, c]`` and ``b[o] = sum_{d,h,w} second[o, d, h, w] *
    first_bias[d]``. Exact when the input of ``second`` is padded with the value the first
    stage gives on padding, i.e. its bias (DBB's BN-and-pad layer), so that padding the input
    of the composed conv with zeros is the same. Returns ``(O, C // g, k_h, k_w)`` and
    ``(O,)`` in ``fusion_dtype`` of the inputs.
    """
    dtype = fusion_dtype(torch.promote_types(first.dtype, second.dtype))
    first, second = first.to(dtype), second.to(dtype)
    inner, in_per_group = first.shape[:2]
    out, inner_per_group, k_h, k_w = second.shape
    if first.shape[2:] != (1, 1):
        raise ValueError(f'the first kernel must be 1x1, got shape {tuple(first.shape)}')
    _check_groups('inner channels of the first kernel', inner, groups)
    _check_groups('output channels of the second kernel', out, groups)
    if inner // groups != inner_per_group:
        raise ValueError(f'kernels do not chain: the first gives {inner} channels '
                         f'({inner // groups} per group), the second expects {inner_per_group} '
                         f'per group with groups={groups}')
    a = first.reshape(groups, inner_per_group, in_per_group)
    b = second.reshape(groups, out // groups, inner_per_group, k_h, k_w)
    kernel = torch.einsum('gdc,godhw->gochw', a, b).reshape(out, in_per_group, k_h, k_w)
    if first_bias is None:
        bias = torch.zeros(out, dtype=dtype, device=second.device)
    else:
        bias = torch.einsum('godhw,gd->go', b, first_bias.to(dtype).reshape(groups, -1))
        bias = bias.reshape(out)
    return kernel, bias


def compose_1x1_depthwise(first: Tensor, depthwise: Tensor) -> Tensor:
    """One grouped kxk kernel equal to a grouped 1x1 conv followed by a per-channel kxk filter.

    ``first``: ``(O, C // g, 1, 1)`` (no bias); ``depthwise``: ``(O, k_h, k_w)`` or
    ``(O, 1, k_h, k_w)``, one filter per output channel (a depthwise conv, OREPA's frequency
    prior), or ``(k_h, k_w)``, one filter for all (OREPA's averaging filter). Since the 1x1
    output of a zero-padded input is zero on the padding,
    ``K[o, c, h, w] = first[o, c] * depthwise[o, h, w]`` with zero padding is exact.
    Returns ``(O, C // g, k_h, k_w)`` in the promoted dtype of the inputs.
    """
    if first.dim() != 4 or first.shape[2:] != (1, 1):
        raise ValueError(f'the first kernel must be 1x1, got shape {tuple(first.shape)}')
    k_h, k_w = depthwise.shape[-2:]
    filters = depthwise.reshape(-1, 1, k_h, k_w)
    if filters.shape[0] not in (1, first.shape[0]):
        raise ValueError(f'expected one {k_h}x{k_w} filter per output channel '
                         f'({first.shape[0]}) or one for all, got {filters.shape[0]}')
    return first * filters


def compose_kernels(first: Tensor, second: Tensor, groups: int = 1) -> Tensor:
    """The kernel of two stacked grouped convs: ``conv(conv(x, first, P), second, 0)``.

    ``first``: ``(C1, C // g, k1_h, k1_w)`` (stride 1), ``second``: ``(C2, C1 // g, k2_h, k2_w)``.
    Returns ``K`` of shape ``(C2, C // g, k1_h + k2_h - 1, k1_w + k2_w - 1)`` with
    ``conv(x, K, padding=P) == conv(conv(x, first, padding=P), second, padding=0)`` for any
    ``P`` and any stride of the second conv: ``K[o, c] = sum_d second[o, d] (*) first[d, c]``,
    ``(*)`` the full 2-D convolution (cross-correlations compose by convolving their kernels).
    """
    dtype = torch.promote_types(first.dtype, second.dtype)
    first, second = first.to(dtype), second.to(dtype)
    mid, mid_per_group = first.shape[0], second.shape[1]
    _check_groups('output channels of the first kernel', mid, groups)
    if mid // groups != mid_per_group:
        raise ValueError(f'kernels do not chain: the first gives {mid} channels, the second '
                         f'expects {mid_per_group} per group with groups={groups}')
    k2_h, k2_w = second.shape[-2:]
    # correlating the transposed first kernel with the flipped second one = full convolution
    kernel = nn.functional.conv2d(first.transpose(0, 1), second.flip(-2, -1),
                                  padding=(k2_h - 1, k2_w - 1), groups=groups)
    return kernel.transpose(0, 1)


def depthwise_separable_kernel(depthwise: Tensor, pointwise: Tensor, in_channels: int,
                               groups: int = 1) -> Tensor:
    """One grouped kxk kernel equal to a depthwise conv followed by a grouped 1x1 conv.

    ``depthwise``: ``(C * m, 1, k_h, k_w)``, ``m`` filters per input channel (channel
    ``c * m + t`` filters input ``c``, as ``nn.Conv2d(C, C * m, k, groups=C)``);
    ``pointwise``: ``(O, C * m // g, 1, 1)`` with ``g`` groups. Within group ``j``:
    ``K[o, c] = sum_t pointwise[o, c * m + t] * depthwise[(j * C / g + c) * m + t]``.
    Returns ``(O, C // g, k_h, k_w)``.
    """
    expanded, _, k_h, k_w = depthwise.shape
    out, expanded_per_group = pointwise.shape[:2]
    _check_groups('in_channels', in_channels, groups)
    _check_groups('output channels of the pointwise kernel', out, groups)
    if depthwise.shape[1] != 1 or pointwise.shape[2:] != (1, 1) or expanded % in_channels:
        raise ValueError(f'expected a depthwise (C*m, 1, k, k) kernel with C={in_channels} and a '
                         f'pointwise (O, C*m/g, 1, 1) kernel, got {tuple(depthwise.shape)} and '
                         f'{tuple(pointwise.shape)}')
    if expanded != expanded_per_group * groups:
        raise ValueError(f'the pointwise kernel expects {expanded_per_group * groups} channels '
                         f'from the depthwise one, which gives {expanded}')
    dtype = torch.promote_types(depthwise.dtype, pointwise.dtype)
    multiplier, in_per_group = expanded // in_channels, in_channels // groups
    dw = depthwise.to(dtype).reshape(groups, in_per_group, multiplier, k_h, k_w)
    pw = pointwise.to(dtype).reshape(groups, out // groups, in_per_group, multiplier)
    kernel = torch.einsum('gcthw,goct->gochw', dw, pw)
    return kernel.reshape(out, in_per_group, k_h, k_w)


# ---------------------------------------------------------------------------------------------
# CSLA kernels (RepOptimizer)
# ---------------------------------------------------------------------------------------------

def csla_kernel(kernel: Tensor, scale: Tensor, kernel_1x1: Optional[Tensor] = None,
                scale_1x1: Optional[Tensor] = None, scale_identity: Optional[Tensor] = None,
                groups: int = 1) -> Tensor:
    """The one kernel of a CSLA block (Constant-Scale Linear Addition, before its BN).

    ``s * conv(x, W) + s_1x1 * conv(x, K1) + s_id * x = conv(x, W')`` with
    ``W' = s * W + pad(s_1x1 * K1) + s_id * I``. ``kernel`` ``W``: ``(O, C // g, k_h, k_w)``;
    ``kernel_1x1`` ``K1``: ``(O, C // g, 1, 1)`` of the same dtype, or None; every scale is
    per output channel, ``(O,)``; ``I`` is :func:`identity_kernel` with ``groups``
    (``O == C``), used when ``scale_identity`` is given. The same formula gives the
    RepOptimizer re-initialisation (``W, K1`` = the initial kernels) and the grad-mult map
    (``W, K1`` = ones, scales raised to a power, identity scale 1), see ``rep_mm.optim``.
    Returns ``(O, C // g, k_h, k_w)`` in ``kernel.dtype``.
    """
    zero = kernel.new_zeros(kernel.shape[0])
    branches = [(scale_output_channels(kernel, scale), zero)]
    if kernel_1x1 is not None:
        branches.append((scale_output_channels(kernel_1x1, scale_1x1), zero))
    if scale_identity is not None:
        eye = identity_kernel(kernel.shape[0], groups, 1, dtype=kernel.dtype,
                              device=kernel.device)
        branches.append((scale_output_channels(eye, scale_identity), zero))
    return sum_branches(branches, kernel.shape[-2:])[0]


# ---------------------------------------------------------------------------------------------
# Conv -> FC (RepMLP)
# ---------------------------------------------------------------------------------------------

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
