"""OREPA RepVGG-style block: OREPA kxk + 1x1 conv-BN + identity-BN, one kxk conv at deploy.

Training-time computation (the OREPA paper's RepVGG variant)::

    y = act(SE(BN_d(conv(x, W_dense)) + BN_1(conv_1x1(x)) + BN_id(x)))

``W_dense`` is an OREPA kernel (:mod:`rep_mm.blocks.orepa`) without the plain 1x1 branch
(the block has its own). Folding: ``K = fuse_bn(W_dense, BN_d) + pad(fuse_bn(K_1, BN_1), k) +
pad(fuse_bn(I, BN_id), k)``. Unlike the original, ``groups > 1`` works.
"""
from typing import Optional

from torch import Tensor, nn
from torch.nn import functional as F

from ..fusion import KernelBias, fuse_bn, fusion_dtype
from .conv_bn import ConvBN, build_batch_norm
from .nonlinear import Nonlinear, build_nonlinear
from .orepa import OREPAKernelMixin
from .repvgg import RepVGGStyleBlock
from .se import SEBlock
from ._checks import check_centre_padding, check_conv_args


class OREPA3x3RepVGG(OREPAKernelMixin, nn.Module):
    """The dense branch (official ``OREPA_3x3_RepVGG``): ``BN(conv(x, W))``, keys ``weight_rbr_*``.

    ``vector`` has 5 rows (origin, avg, prior, 1x1-kxk, depthwise-separable), plus one unused
    row when ``C_in == C_out`` and stride 1, as in the official checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int = 1, groups: int = 1, dilation: int = 1,
                 internal_channels_1x1_3x3: Optional[int] = None,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        rows = 6 if in_channels == out_channels and stride == 1 else 5
        self._init_orepa_kernel('weight_rbr_', in_channels, out_channels, kernel_size, groups,
                                internal_channels_1x1_3x3, False, rows)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.bn = build_batch_norm(norm_cfg, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.conv2d(x, self.weight_gen(), None, self.stride, self.padding,
                                self.dilation, self.groups))

    def fused_kernel_bias(self) -> KernelBias:
        return fuse_bn(self.weight_gen(fusion_dtype(self.vector.dtype)), self.bn)


class OREPARepVGGBlock(RepVGGStyleBlock):
    """RepVGG block with an OREPA dense branch (official ``RepVGGBlock_OREPA``).

    Keys: ``rbr_identity`` (BN), ``rbr_dense`` (:class:`OREPA3x3RepVGG`), ``rbr_1x1``
    (``conv``, ``bn``), ``se`` (``down``, ``up``) when ``use_se``; deploy: ``rbr_reparam``.
    The activation keeps the official argument name ``nonlinear`` (it also takes an act_cfg
    dict).

    Args:
        in_channels, out_channels (int): channels.
        kernel_size (int): odd kernel size. Default 3.
        stride (int): stride. Default 1.
        padding (int, optional): padding of the dense conv; default ``dilation * (k // 2)``,
            and at least that (so the 1x1 branch aligns).
        dilation (int): dilation of the dense conv. Default 1.
        groups (int): groups of all branches. Default 1.
        deploy (bool): build the fused conv directly. Default False.
        use_se (bool): squeeze-excitation (``out // 16`` channels) before the activation.
        nonlinear: activation; default ReLU as in the original (None for none).
        internal_channels_1x1_3x3 (int, optional): see :class:`rep_mm.blocks.OREPA`.
        norm_cfg (dict): BatchNorm config. Default ``dict(type='BN')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: Optional[int] = None, dilation: int = 1,
                 groups: int = 1, deploy: bool = False, use_se: bool = False,
                 nonlinear: Nonlinear = 'ReLU', internal_channels_1x1_3x3: Optional[int] = None,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args('OREPARepVGGBlock', in_channels, out_channels, kernel_size, stride,
                        dilation, groups, padding)
        padding = check_centre_padding('OREPARepVGGBlock', kernel_size, padding, dilation)
        centre = dilation * (kernel_size // 2)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups = dilation, groups
        self.deploy = deploy
        self.nonlinearity = build_nonlinear(nonlinear)
        self.se = SEBlock(out_channels, out_channels // 16) if use_se else nn.Identity()
        if deploy:
            self._init_deploy_form()
            return
        has_identity = in_channels == out_channels and stride == 1 and padding == centre
        self.rbr_identity = build_batch_norm(norm_cfg, in_channels) if has_identity else None
        self.rbr_dense = OREPA3x3RepVGG(in_channels, out_channels, kernel_size, stride, padding,
                                        groups, dilation, internal_channels_1x1_3x3, norm_cfg)
        self.rbr_1x1 = ConvBN(in_channels, out_channels, 1, stride, padding - centre,
                              groups=groups, norm_cfg=norm_cfg)

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            out = self.rbr_reparam(x)
        else:
            out = self.rbr_dense(x) + self.rbr_1x1(x)
            if self.rbr_identity is not None:
                out = out + self.rbr_identity(x)
        return self.nonlinearity(self.se(out))

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, k={self.kernel_size}, '
                f's={self.stride}, g={self.groups}, deploy={self.deploy}')
