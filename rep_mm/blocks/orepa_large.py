"""OREPA's 1x1 block and large-kernel block (a kxk kernel generated from stacked 3x3 OREPA kernels).

``OREPA1x1``: ``W = v0 * K_origin + v1 * (K_2 @ K_1)`` (a linear 1x1 -> 1x1 "expand or reduce"
branch, one of the two factors identity-initialised), then one BN.

``OREPALargeConv`` (the ResNet stem, https://arxiv.org/abs/2204.00826): ``(k - 1) / 2`` OREPA
3x3 kernel generators ``W_0 .. W_n`` are chained into one ``k x k`` kernel,
``W = compose(... compose(W_0, flip(W_1)) ..., flip(W_n))`` (:func:`rep_mm.fusion.compose_kernels`),
then one conv + BN. The original chains them by *correlating* the kernels (no 180-degree flip),
which is the exact composition of stacked convs whose later kernels are flipped; rep_mm keeps
that parametrisation so released weights compute the same function.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..fusion import compose_1x1_kxk, compose_kernels, identity_kernel, scale_output_channels
from .conv_bn import build_batch_norm
from .nonlinear import Nonlinear, build_nonlinear
from .orepa import GeneratedKernelBlock, OREPAWeightGenerator
from ._checks import check_conv_args, check_odd_kernel


class OREPA1x1(GeneratedKernelBlock):
    """The OREPA 1x1 block (official ``OREPA_1x1``), official parameter names.

    Keys: ``weight_or1x1_origin``, ``weight_or1x1_l2i_conv1``, ``weight_or1x1_l2i_conv2``,
    ``vector`` (2 x C_out), ``bn``; deploy: ``or1x1_reparam``. The inner width of the linear
    branch is ``min(C_in, C_out)`` (identity-initialised factor on the smaller side).
    Unlike the original, ``groups > 1`` works (grouped factors). The activation keeps the
    official argument name ``nonlinear`` (it also takes an act_cfg dict).

    Args:
        in_channels, out_channels (int): channels.
        kernel_size (int): must be 1.
        stride, padding, dilation, groups (int): of the conv. Defaults 1, 0, 1, 1.
        deploy (bool): build the fused conv directly. Default False.
        nonlinear: activation after BN (``nn.Module``, act_cfg dict, type name, or None).
        single_init (bool): start as the origin branch alone. Default False.
        norm_cfg (dict): BatchNorm config. Default ``dict(type='BN')``.
    """

    fused_name = 'or1x1_reparam'
    branch_names = ('weight_or1x1_origin', 'weight_or1x1_l2i_conv1', 'weight_or1x1_l2i_conv2',
                    'vector', 'bn')

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
                 deploy: bool = False, nonlinear: Nonlinear = None, single_init: bool = False,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args('OREPA1x1', in_channels, out_channels, kernel_size, stride, dilation,
                        groups, padding)
        if kernel_size != 1:
            raise ValueError(f'OREPA1x1 is a 1x1 block, got kernel_size={kernel_size}; use OREPA '
                             f'for kxk kernels')
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, 1
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.deploy = deploy
        self.nonlinear = build_nonlinear(nonlinear)
        if deploy:
            self._init_deploy_form()
            return
        cg = in_channels // groups
        self.weight_or1x1_origin = nn.Parameter(nn.init.kaiming_uniform_(
            torch.empty(out_channels, cg, 1, 1), a=0.0))
        if out_channels > in_channels:  # expand: identity first, then in -> out
            self.weight_or1x1_l2i_conv1 = nn.Parameter(identity_kernel(in_channels, groups))
            self.weight_or1x1_l2i_conv2 = nn.Parameter(nn.init.kaiming_uniform_(
                torch.empty(out_channels, cg, 1, 1), a=0.0))
        else:  # reduce: in -> out, then identity
            self.weight_or1x1_l2i_conv1 = nn.Parameter(nn.init.kaiming_uniform_(
                torch.empty(out_channels, cg, 1, 1), a=0.0))
            self.weight_or1x1_l2i_conv2 = nn.Parameter(identity_kernel(out_channels, groups))
        self.vector = nn.Parameter(torch.empty(2, out_channels))
        with torch.no_grad():
            self.vector[0].fill_(1.0)
            self.vector[1].fill_(0.0 if single_init else 0.5)
        self.bn = build_batch_norm(norm_cfg, out_channels)

    def weight_gen(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """``v0 * K_origin + v1 * compose(K_1, K_2)``, ``(C_out, C_in // g, 1, 1)``."""
        dtype = dtype or self.vector.dtype
        vector = self.vector.to(dtype)
        seq, _ = compose_1x1_kxk(self.weight_or1x1_l2i_conv1.to(dtype),
                                 self.weight_or1x1_l2i_conv2.to(dtype), self.groups)
        return (scale_output_channels(self.weight_or1x1_origin.to(dtype), vector[0])
                + scale_output_channels(seq.to(dtype), vector[1]))


class OREPALargeConv(GeneratedKernelBlock):
    """OREPA large-kernel block (official ``OREPA_LargeConv``), official parameter names.

    Keys: ``weight0`` .. ``weight{n-1}`` (OREPA 3x3 generators, ``n = (k - 1) / 2``), ``bn``;
    deploy: ``or_large_reparam``. Unlike the original, ``groups > 1`` works (every generator
    is grouped). The activation keeps the official argument name ``nonlinear`` (it also takes
    an act_cfg dict).

    Args:
        in_channels, out_channels (int): channels (the inner width is ``out_channels``).
        kernel_size (int): odd, at least 3. Default 7.
        stride, padding, dilation, groups (int): of the conv; padding defaults to
            ``dilation * (k // 2)``.
        deploy (bool): build the fused conv directly. Default False.
        nonlinear: activation after BN (``nn.Module``, act_cfg dict, type name, or None).
        norm_cfg (dict): BatchNorm config. Default ``dict(type='BN')``.
    """

    fused_name = 'or_large_reparam'

    @property
    def branch_names(self) -> Tuple[str, ...]:
        return tuple(f'weight{i}' for i in range(self.layers)) + ('bn',)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7,
                 stride: int = 1, padding: Optional[int] = None, dilation: int = 1,
                 groups: int = 1, deploy: bool = False, nonlinear: Nonlinear = None,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args('OREPALargeConv', in_channels, out_channels, kernel_size, stride,
                        dilation, groups, padding)
        check_odd_kernel('OREPALargeConv', kernel_size,
                         'it builds the kxk kernel from stacked 3x3 kernels', minimum=3)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = (kernel_size, stride,
                                                                     dilation, groups)
        self.padding = dilation * (kernel_size // 2) if padding is None else padding
        self.layers = (kernel_size - 1) // 2
        self.deploy = deploy
        self.nonlinear = build_nonlinear(nonlinear)
        if deploy:
            self._init_deploy_form()
            return
        for i in range(self.layers):
            setattr(self, f'weight{i}', OREPAWeightGenerator(
                in_channels if i == 0 else out_channels, out_channels, 3, groups))
        self.bn = build_batch_norm(norm_cfg, out_channels)

    def weight_gen(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """The chained kernel (module docstring), ``(C_out, C_in // g, k, k)``."""
        weight = self.weight0.weight_gen(dtype)
        for i in range(1, self.layers):
            following = getattr(self, f'weight{i}').weight_gen(dtype)
            weight = compose_kernels(weight, following.flip(-2, -1), self.groups)
        return weight

    def _generator_dtype(self) -> torch.dtype:
        return self.bn.running_var.dtype
