"""Diverse Branch Block: kxk, 1x1, 1x1->avg and 1x1->kxk conv-BN branches, one kxk conv at deploy.

Training-time computation (https://arxiv.org/abs/2103.13425), ``x``: ``(N, C_in, H, W)``::

    y = act( BN_o(conv_kxk(x))                                    dbb_origin
           + BN_1(conv_1x1(x))                                    dbb_1x1 (if groups < C_out)
           + BN_a(avg_k(BNpad(conv_1x1(x))))                      dbb_avg
           + BN_2(conv_kxk(BNpad(conv_1x1(x)))) )                 dbb_1x1_kxk

``BNpad`` is a BatchNorm followed by padding with the BN's value at zero input (its shift), so
the padded map equals the BN of a conv over a zero-padded input: each two-stage branch is a
composition of linear maps, and (``fusion.py``)::

    origin = fuse_bn(K_o, BN_o);   one = pad(fuse_bn(K_1, BN_1), k)
    avg    = fuse_bn(*compose_1x1_kxk(fuse_bn(K_a, BN_p), avg_pool_kernel), BN_a)
    seq    = fuse_bn(*compose_1x1_kxk(fuse_bn(K_1' + I, BN_p'), K_2), BN_2)
    K, b   = sum_branches(origin, one, avg, seq)

When ``groups == C_out == C_in`` (depthwise) there is no 1x1 branch and the avg branch pools the
input directly (zero padding counted).
"""
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..fusion import (KernelBias, avg_pool_kernel, bn_scale_shift, channel_identity,
                      compose_1x1_kxk, fuse_bn, fusion_dtype, sum_branches)
from ..reparam import ReparamBlock
from .conv_bn import ConvBN, build_batch_norm
from .nonlinear import Nonlinear, build_nonlinear
from ._checks import check_conv_args, check_divisible_by_groups, check_ints, check_odd_kernel


class IdentityBasedConv1x1(nn.Conv2d):
    """A grouped 1x1 conv whose kernel is ``weight + I`` (``weight`` starts at zero).

    ``I`` is :func:`rep_mm.fusion.channel_identity`, a non-persistent buffer (the official
    state_dict holds only ``weight``).
    """

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__(channels, channels, 1, groups=groups, bias=False)
        nn.init.zeros_(self.weight)
        self.register_buffer('id_tensor', channel_identity(channels, channels // groups),
                             persistent=False)

    def actual_kernel(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """``weight + I`` in ``dtype`` (default: the weight's; folding asks for fp32+)."""
        dtype = dtype or self.weight.dtype
        return self.weight.to(dtype) + self.id_tensor.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.actual_kernel(), None, 1, 0, 1, self.groups)


class BNAndPadLayer(nn.Module):
    """BatchNorm, then pad ``pad_pixels`` on every side with the BN's output for a zero input.

    The pad value is the BN's inference ``shift`` (running statistics, detached, as in the
    original), so in eval mode the output equals BN of a conv applied to a zero-padded input.
    """

    def __init__(self, pad_pixels: int, num_features: int, norm_cfg: Optional[dict] = None,
                 affine: bool = True) -> None:
        super().__init__()
        bn_cfg = dict(norm_cfg or dict(type='BN'))
        bn_cfg.setdefault('affine', affine)
        self.bn = build_batch_norm(bn_cfg, num_features)
        self.pad_pixels = pad_pixels

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn(x)
        if self.pad_pixels > 0:
            with torch.no_grad():
                _, shift = bn_scale_shift(self.bn, out.dtype)
            out = F.pad(out - shift.view(1, -1, 1, 1), [self.pad_pixels] * 4)
            out = out + shift.view(1, -1, 1, 1)
        return out


class DiverseBranchBlock(ReparamBlock):
    """Diverse Branch Block (DBB), official parameter names.

    Keys: ``dbb_origin.{conv,bn}``, ``dbb_1x1.{conv,bn}``, ``dbb_avg.{conv,bn.bn,avgbn}``,
    ``dbb_1x1_kxk.{idconv1|conv1,bn1.bn,conv2,bn2}``; deploy: ``dbb_reparam`` (with bias). The
    activation keeps the official argument name ``nonlinear`` (it also takes an act_cfg dict).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): odd kernel size ``k``.
        stride (int): stride of all branches. Default 1.
        padding (int, optional): must be ``k // 2`` (default) so the branches align.
        dilation (int): must be 1 (the pooling branch has no dilated form).
        groups (int): groups of all branches. Default 1.
        internal_channels_1x1_3x3 (int, optional): channels between the 1x1 and kxk convs of
            ``dbb_1x1_kxk``; default ``in_channels`` (identity-initialised 1x1) or
            ``2 * in_channels`` when ``groups == out_channels``.
        deploy (bool): build the fused conv directly. Default False.
        nonlinear: activation after the sum (``nn.Module``, act_cfg dict, type name, or None).
        single_init (bool): start as the origin branch alone (other branch BN weights 0).
        norm_cfg (dict): BatchNorm config of the branches. Default ``dict(type='BN')``.
    """

    fused_name = 'dbb_reparam'
    branch_names = ('dbb_origin', 'dbb_1x1', 'dbb_avg', 'dbb_1x1_kxk')

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1,
                 internal_channels_1x1_3x3: Optional[int] = None, deploy: bool = False,
                 nonlinear: Nonlinear = None, single_init: bool = False,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        check_conv_args('DiverseBranchBlock', in_channels, out_channels, kernel_size, stride,
                        dilation, groups, padding)
        if internal_channels_1x1_3x3 is not None:
            check_ints('DiverseBranchBlock', 1,
                       internal_channels_1x1_3x3=internal_channels_1x1_3x3)
        _check_dbb_args(kernel_size, padding, dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups = dilation, groups
        self.deploy = deploy
        self.nonlinear = build_nonlinear(nonlinear)
        if deploy:
            self._init_deploy_form()
            return

        self.dbb_origin = ConvBN(in_channels, out_channels, kernel_size, stride, padding,
                                 groups=groups, norm_cfg=norm_cfg)
        self.dbb_avg = nn.Sequential()
        # depthwise (groups == C_out == C_in): the original pools the input itself; when the
        # channels differ pooling the input is impossible and rep_mm keeps the 1x1 path
        if groups < out_channels or in_channels != out_channels:
            self.dbb_avg.add_module('conv', nn.Conv2d(in_channels, out_channels, 1, groups=groups,
                                                      bias=False))
            self.dbb_avg.add_module('bn', BNAndPadLayer(padding, out_channels, norm_cfg))
            self.dbb_avg.add_module('avg', nn.AvgPool2d(kernel_size, stride, 0))
            self.dbb_1x1 = ConvBN(in_channels, out_channels, 1, stride, 0, groups=groups,
                                  norm_cfg=norm_cfg)
        else:
            self.dbb_avg.add_module('avg', nn.AvgPool2d(kernel_size, stride, padding))
        self.dbb_avg.add_module('avgbn', build_batch_norm(norm_cfg, out_channels))

        internal = internal_channels_1x1_3x3
        if internal is None:
            internal = in_channels if groups < out_channels else 2 * in_channels
        check_divisible_by_groups('internal_channels_1x1_3x3', internal, groups)
        self.dbb_1x1_kxk = nn.Sequential()
        if internal == in_channels:
            self.dbb_1x1_kxk.add_module('idconv1', IdentityBasedConv1x1(in_channels, groups))
        else:
            self.dbb_1x1_kxk.add_module('conv1', nn.Conv2d(in_channels, internal, 1,
                                                           groups=groups, bias=False))
        self.dbb_1x1_kxk.add_module('bn1', BNAndPadLayer(padding, internal, norm_cfg))
        self.dbb_1x1_kxk.add_module('conv2', nn.Conv2d(internal, out_channels, kernel_size,
                                                       stride, 0, groups=groups, bias=False))
        self.dbb_1x1_kxk.add_module('bn2', build_batch_norm(norm_cfg, out_channels))
        if single_init:
            self.single_init()

    @torch.no_grad()
    def single_init(self) -> None:
        """Zero the BN weights of every branch but the origin: the block starts as conv-BN."""
        for bn in (getattr(self, 'dbb_1x1', None) and self.dbb_1x1.bn, self.dbb_avg.avgbn,
                   self.dbb_1x1_kxk.bn2):
            if bn is not None and bn.weight is not None:
                bn.weight.zero_()
        if self.dbb_origin.bn.weight is not None:
            self.dbb_origin.bn.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.nonlinear(self.dbb_reparam(x))
        out = self.dbb_origin(x)
        if hasattr(self, 'dbb_1x1'):
            out = out + self.dbb_1x1(x)
        out = out + self.dbb_avg(x) + self.dbb_1x1_kxk(x)
        return self.nonlinear(out)

    def _fold_branches(self) -> KernelBias:
        weight = self.dbb_origin.conv.weight
        branches = [self.dbb_origin.fused_kernel_bias()]
        if hasattr(self, 'dbb_1x1'):
            branches.append(self.dbb_1x1.fused_kernel_bias())
        # 1x1 -> avg pool (or avg pool alone when depthwise)
        # built in the fusion dtype: 1 / k^2 is not exact in fp16 / bf16
        pool = avg_pool_kernel(self.out_channels, self.groups, self.kernel_size,
                               dtype=fusion_dtype(weight.dtype), device=weight.device)
        if hasattr(self.dbb_avg, 'conv'):
            first, first_bias = fuse_bn(self.dbb_avg.conv.weight, self.dbb_avg.bn.bn)
            pool, pool_bias = compose_1x1_kxk(first, pool, self.groups, first_bias)
            branches.append(fuse_bn(pool, self.dbb_avg.avgbn, pool_bias))
        else:
            branches.append(fuse_bn(pool, self.dbb_avg.avgbn))
        # 1x1 -> kxk
        seq = self.dbb_1x1_kxk
        first = seq.idconv1.actual_kernel(fusion_dtype(weight.dtype)) \
            if hasattr(seq, 'idconv1') else seq.conv1.weight
        first, first_bias = fuse_bn(first, seq.bn1.bn)
        kernel, bias = compose_1x1_kxk(first, seq.conv2.weight, self.groups, first_bias)
        branches.append(fuse_bn(kernel, seq.bn2, bias))
        return sum_branches(branches, self.kernel_size)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, k={self.kernel_size}, '
                f's={self.stride}, g={self.groups}, deploy={self.deploy}')


def _check_dbb_args(kernel_size: int, padding: int, dilation: int) -> None:
    """What DBB needs beyond :func:`check_conv_args`: its branches align only at the centre
    padding of an odd kernel without dilation."""
    check_odd_kernel('DiverseBranchBlock', kernel_size,
                     'its 1x1, pooling and kxk branches share a centre')
    if dilation != 1:
        raise ValueError(f'DiverseBranchBlock supports only dilation=1 (its average-pooling '
                         f'branch has no dilated form), got {dilation}')
    if padding != kernel_size // 2:
        raise ValueError(f'DiverseBranchBlock needs padding == kernel_size // 2 '
                         f'(= {kernel_size // 2}) so that its 1x1, pooling and kxk branches align, '
                         f'got padding={padding}')
