"""OREPA: six linear branches squeezed into ONE kxk kernel at every forward, then one BN.

Online re-parameterization (https://arxiv.org/abs/2204.00826). Unlike DBB, the branches are
never run on data: each step builds the kernel (``weight_gen``) and runs one conv + BN::

    W = v0 * K_origin                                  origin kxk
      + v1 * (K_avg (x) ones(k, k) / k^2)              1x1 then average
      + v2 * (K_pfir (x) P)                            1x1 then the frequency prior P (per out ch.)
      + v3 * compose_1x1_kxk(K_id + I, K_2)            identity-based 1x1 then kxk
      + v4 * pad(K_1x1, k)                             1x1 (OREPA only, not the RepVGG branch)
      + v5 * depthwise_separable(K_dw, K_pw)           depthwise kxk (x8 channels) then 1x1
    y = act(BN(conv(x, W)))

``v`` (``vector``) holds one learnable scale per branch and output channel. Deploy form:
``conv(x; fuse_bn(W, BN))``. Kernels are composed by :mod:`rep_mm.fusion`.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..fusion import (KernelBias, avg_pool_kernel, channel_identity, compose_1x1_depthwise,
                      compose_1x1_kxk, depthwise_separable_kernel, fuse_bn, fusion_dtype,
                      pad_kernel, scale_output_channels)
from ..reparam import ReparamBlock
from .conv_bn import build_batch_norm
from .nonlinear import Nonlinear, build_nonlinear
from ._checks import (check_conv_args, check_divisible_by_groups, check_groups_divide, check_ints,
                      check_odd_kernel, check_ratio)

DW_EXPANSION = 8  # depthwise filters per input channel in the depthwise-separable branch
# initial branch scales: origin, avg, prior, 1x1-kxk, 1x1, depthwise-separable
INITIAL_SCALES = dict(origin=0.25, avg=0.25, prior=0.0, seq=0.5, one=1.0, dws=0.5)


def frequency_prior(out_channels: int, kernel_size: int) -> Tensor:
    """OREPA's prior kernels ``P``: one ``k x k`` cosine (DCT-II) basis image per output channel.

    Channel ``i < C/2`` varies along rows, ``P[i, h, w] = cos(pi (h + 1/2) (i + 1) / k)``; the
    others along columns, ``cos(pi (w + 1/2) (i + 1 - C/2) / k)``. Equals the original for
    ``k = 3`` and, unlike it, fills every entry for any odd ``k`` (the original leaves all but
    the 3x3 corner uninitialised).
    """
    half = out_channels / 2
    index = torch.arange(out_channels, dtype=torch.float64).reshape(-1, 1, 1)
    pos = (torch.arange(kernel_size, dtype=torch.float64) + 0.5)
    rows = torch.cos(math.pi * pos.reshape(1, -1, 1) * (index + 1) / kernel_size)
    cols = torch.cos(math.pi * pos.reshape(1, 1, -1) * (index + 1 - half) / kernel_size)
    prior = torch.where(index < half, rows.expand(-1, -1, kernel_size),
                        cols.expand(-1, kernel_size, -1))
    return prior.float()


def official_pointwise_order(pointwise: Tensor, groups: int) -> Tensor:
    """Reorder the rows of OREPA's pointwise kernel into group-major order.

    The original code reads pointwise row ``o' * g + j`` as output ``o'`` of group ``j`` (rows
    interleaved over groups); :func:`rep_mm.fusion.depthwise_separable_kernel` expects the
    ``nn.Conv2d`` order (group ``j`` owns rows ``j * O/g ...``). Identity for ``groups == 1``.
    """
    out = pointwise.shape[0]
    return pointwise.reshape(out // groups, groups, *pointwise.shape[1:]).transpose(0, 1).reshape(
        pointwise.shape)


class OREPAKernelMixin:
    """Parameters and ``weight_gen`` of an OREPA kernel, under a name prefix.

    Registers, in the official order: ``{p}origin``, ``{p}avg_conv``, ``{p}pfir_conv``,
    [``{p}1x1``], ``{p}1x1_kxk_idconv1``, ``{p}1x1_kxk_conv2``, ``{p}gconv_dw``,
    ``{p}gconv_pw``, ``vector``; buffers ``{p}avg_avg``, ``id_tensor``, ``{p}prior``.
    """

    def _init_orepa_kernel(self, prefix: str, in_channels: int, out_channels: int,
                           kernel_size: int, groups: int, internal: Optional[int],
                           with_1x1: bool, vector_rows: int, init_hyper_para: float = 1.0,
                           init_hyper_gamma: float = 1.0, single_init: bool = False) -> None:
        check_odd_kernel('OREPA', kernel_size, 'the prior, average and 1x1 branches are centred')
        check_groups_divide(in_channels, out_channels, groups)
        if internal is None:
            internal = in_channels if groups <= 4 else 2 * in_channels
        check_divisible_by_groups('internal_channels_1x1_3x3', internal, groups)
        self.prefix, self.with_1x1 = prefix, with_1x1
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.groups = kernel_size, groups
        k, cg = kernel_size, in_channels // groups

        def param(name, *shape):
            tensor = torch.empty(*shape)
            nn.init.kaiming_uniform_(tensor, a=0.0)
            setattr(self, prefix + name, nn.Parameter(tensor * init_hyper_para))

        param('origin', out_channels, cg, k, k)
        param('avg_conv', out_channels, cg, 1, 1)
        param('pfir_conv', out_channels, cg, 1, 1)
        if with_1x1:
            param('1x1', out_channels, cg, 1, 1)
        setattr(self, prefix + '1x1_kxk_idconv1', nn.Parameter(torch.zeros(internal, cg, 1, 1)))
        param('1x1_kxk_conv2', out_channels, internal // groups, k, k)
        param('gconv_dw', in_channels * DW_EXPANSION, 1, k, k)
        param('gconv_pw', out_channels, in_channels * DW_EXPANSION // groups, 1, 1)
        self.vector = nn.Parameter(torch.zeros(vector_rows, out_channels))
        self.register_buffer(prefix + 'avg_avg', avg_pool_kernel(1, 1, k)[0, 0])  # (k, k)
        self.register_buffer('id_tensor', channel_identity(internal, cg))
        self.register_buffer(prefix + 'prior', frequency_prior(out_channels, k))
        self._rows = dict(origin=0, avg=1, prior=2, seq=3)
        self._rows.update(dict(one=4, dws=5) if with_1x1 else dict(dws=4))
        with torch.no_grad():
            for branch, row in self._rows.items():
                value = (1.0 if branch == 'origin' else 0.0) if single_init else \
                    INITIAL_SCALES[branch]
                self.vector[row].fill_(value * math.sqrt(init_hyper_gamma))

    def _orepa_param_names(self) -> Tuple[str, ...]:
        """Names of the kernel's parameters and buffers (what its deploy form deletes)."""
        names = ['origin', 'avg_conv', 'pfir_conv'] + (['1x1'] if self.with_1x1 else []) + [
            '1x1_kxk_idconv1', '1x1_kxk_conv2', 'gconv_dw', 'gconv_pw', 'avg_avg', 'prior']
        return tuple(self.prefix + name for name in names) + ('vector', 'id_tensor')

    def weight_gen(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """The kernel ``W`` (module docstring), ``(C_out, C_in // g, k, k)``, differentiable."""
        dtype = dtype or self.vector.dtype

        def get(name):
            return getattr(self, self.prefix + name).to(dtype)

        def scaled(kernel, branch):
            return scale_output_channels(kernel, self.vector[self._rows[branch]].to(dtype))

        k, g = self.kernel_size, self.groups
        seq, _ = compose_1x1_kxk(get('1x1_kxk_idconv1') + self.id_tensor.to(dtype),
                                 get('1x1_kxk_conv2'), g)
        dws = depthwise_separable_kernel(get('gconv_dw'),
                                         official_pointwise_order(get('gconv_pw'), g),
                                         self.in_channels, g)
        weight = (scaled(get('origin'), 'origin')
                  + scaled(compose_1x1_depthwise(get('avg_conv'), get('avg_avg')), 'avg')
                  + scaled(compose_1x1_depthwise(get('pfir_conv'), get('prior')), 'prior')
                  + scaled(seq.to(dtype), 'seq')
                  + scaled(dws.to(dtype), 'dws'))
        if self.with_1x1:
            weight = weight + scaled(pad_kernel(get('1x1'), k), 'one')
        return weight


class OREPAWeightGenerator(OREPAKernelMixin, nn.Module):
    """An OREPA kernel without conv or BN (the official ``OREPA(weight_only=True)``).

    Not a re-param block by itself: :class:`OREPALargeConv` composes several of them.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 groups: int = 1, internal_channels_1x1_3x3: Optional[int] = None,
                 init_hyper_para: float = 1.0, init_hyper_gamma: float = 1.0) -> None:
        super().__init__()
        self._init_orepa_kernel('weight_orepa_', in_channels, out_channels, kernel_size, groups,
                                internal_channels_1x1_3x3, True, 6, init_hyper_para,
                                init_hyper_gamma)

    def forward(self) -> Tensor:
        return self.weight_gen()


class GeneratedKernelBlock(ReparamBlock):
    """Base of the blocks that build their kernel at every step: ``y = act(BN(conv(x, W)))``.

    ``W = weight_gen()`` (``(C_out, C_in // g, k, k)``); deploy form: the conv ``fused_name``
    with ``(K, b) = fuse_bn(W, BN)``. Subclasses declare ``fused_name`` and ``branch_names``
    (the generator's parameters and ``bn``) and define ``weight_gen``, ``stride``,
    ``padding``, ``dilation``, ``groups``, ``bn`` and ``nonlinear``.
    """

    def _generator_dtype(self) -> torch.dtype:
        """The dtype whose fusion dtype (at least float32) ``W`` is generated in."""
        return self.vector.dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.nonlinear(getattr(self, self.fused_name)(x))
        out = F.conv2d(x, self.weight_gen(), None, self.stride, self.padding, self.dilation,
                       self.groups)
        return self.nonlinear(self.bn(out))

    def _fold_branches(self) -> KernelBias:
        """``fuse_bn(W, BN)``, computed in at least float32; differentiable."""
        return fuse_bn(self.weight_gen(fusion_dtype(self._generator_dtype())), self.bn)


class OREPA(OREPAKernelMixin, GeneratedKernelBlock):
    """The OREPA kxk block (official class ``OREPA``), official parameter names.

    Keys: ``weight_orepa_*``, ``vector`` (6 x C_out), ``id_tensor``, ``bn``; deploy:
    ``orepa_reparam`` (conv with bias). The activation keeps the official argument name
    ``nonlinear`` (it also takes an act_cfg dict).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): odd kernel size (any: 3, 5, 7 ...). Default 3.
        stride (int): conv stride. Default 1.
        padding (int, optional): conv padding; default ``dilation * (k // 2)``.
        groups (int): conv groups (every branch is grouped). Default 1.
        dilation (int): conv dilation. Default 1.
        nonlinear: activation after BN (``nn.Module``, act_cfg dict, type name, or None).
        internal_channels_1x1_3x3 (int, optional): channels between the identity-based 1x1
            and the kxk kernel; default ``in_channels`` (``2 * in_channels`` if groups > 4).
        deploy (bool): build the fused conv directly. Default False.
        single_init (bool): start with only the origin branch (other scales 0). Default False.
        init_hyper_para (float): factor on the initial branch kernels. Default 1.
        init_hyper_gamma (float): the initial scales are multiplied by its square root.
        norm_cfg (dict): BatchNorm config. Default ``dict(type='BN')``.
    """

    fused_name = 'orepa_reparam'

    @property
    def branch_names(self) -> Tuple[str, ...]:
        return self._orepa_param_names() + ('bn',)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: Optional[int] = None, groups: int = 1,
                 dilation: int = 1, nonlinear: Nonlinear = None,
                 internal_channels_1x1_3x3: Optional[int] = None, deploy: bool = False,
                 single_init: bool = False, init_hyper_para: float = 1.0,
                 init_hyper_gamma: float = 1.0, norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args('OREPA', in_channels, out_channels, kernel_size, stride, dilation, groups,
                        padding)
        if internal_channels_1x1_3x3 is not None:
            check_ints('OREPA', 1, internal_channels_1x1_3x3=internal_channels_1x1_3x3)
        for name, value in (('init_hyper_para', init_hyper_para),
                            ('init_hyper_gamma', init_hyper_gamma)):
            check_ratio('OREPA', name, value, allow_zero=True)
        self.stride, self.dilation = stride, dilation
        self.padding = dilation * (kernel_size // 2) if padding is None else padding
        self.deploy = deploy
        self.nonlinear = build_nonlinear(nonlinear)
        if deploy:  # channels % groups: checked by check_conv_args above
            self.in_channels, self.out_channels = in_channels, out_channels
            self.kernel_size, self.groups = kernel_size, groups
            self._init_deploy_form()
            return
        self._init_orepa_kernel('weight_orepa_', in_channels, out_channels, kernel_size, groups,
                                internal_channels_1x1_3x3, True, 6, init_hyper_para,
                                init_hyper_gamma, single_init)
        self.bn = build_batch_norm(norm_cfg, out_channels)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, k={self.kernel_size}, '
                f's={self.stride}, p={self.padding}, d={self.dilation}, g={self.groups}, '
                f'deploy={self.deploy}')
