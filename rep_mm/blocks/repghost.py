"""RepGhost blocks (https://arxiv.org/abs/2211.06088): ghost module with re-param, bottleneck.

Structural RepGhost module (``x``: ``(N, C_in, H, W)``)::

    x1 = primary_conv(x)                               # 1x1 conv + BN (+ ReLU)
    y  = act(BN_c(dw(x1; W)) + BN_f(x1))               # cheap op + identity-BN "fusion" branch

Both branches are depthwise and linear in ``x1``, so they fold (``fusion.py``) into one
depthwise conv ``K = fuse_bn(W, BN_c) + pad(fuse_bn(I, BN_f))`` (``cheap_operation`` in the
deploy form). :class:`RepGhostBottleneck` is shared by RepGhostNet and RepOpt-GhostNet: its
ghost modules come from a factory (:class:`RepGhostModule` or ``csla.RepOptGhostModule``).
"""
from typing import Callable, Optional

from torch import Tensor, nn
from torch.nn import functional as F

from ..fusion import KernelBias, fuse_bn, identity_kernel, sum_branches
from ..reparam import ReparamBlock
from .conv_bn import build_batch_norm
from .nonlinear import build_nonlinear
from ._checks import check_conv_args, check_ints, check_ratio

__all__ = ['make_divisible', 'GhostSqueezeExcite', 'GhostModuleBase', 'RepGhostModule',
           'RepGhostBottleneck', 'ConvBnAct']


def make_divisible(value: float, divisor: int = 4, min_value: Optional[int] = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (nearest, never below 90% of ``value``)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class GhostSqueezeExcite(nn.Module):
    """Squeeze-excite of GhostNet: ``x * hard_sigmoid(expand(relu(reduce(avgpool(x)))))``.

    ``hard_sigmoid(z) = relu6(z + 3) / 6``; the reduced width is
    ``make_divisible(C * se_ratio, 4)``. Global (adaptive) pooling: any input size works.
    """

    def __init__(self, channels: int, se_ratio: float = 0.25, divisor: int = 4) -> None:
        super().__init__()
        check_ints('GhostSqueezeExcite', 1, channels=channels, divisor=divisor)
        check_ratio('GhostSqueezeExcite', 'se_ratio', se_ratio,
                    meaning='the squeeze width is channels * se_ratio')
        reduced = make_divisible(channels * se_ratio, divisor)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * (F.relu6(gate + 3.0) / 6.0)


class ConvBnAct(nn.Module):
    """``act1(bn1(conv(x)))``: the last 1x1 layer of (RepOpt-)GhostNet (official names)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args(type(self).__name__, in_channels, out_channels, kernel_size, stride)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              bias=False)
        self.bn1 = build_batch_norm(norm_cfg, out_channels)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act1(self.bn1(self.conv(x)))


RELU = dict(type='ReLU', inplace=True)  # the ghost modules' default activation (official)


def ghost_primary_conv(in_channels: int, out_channels: int, act_cfg: Optional[dict],
                       norm_cfg: Optional[dict]) -> nn.Sequential:
    """The ghost modules' ``primary_conv``: 1x1 conv (no bias), BN, activation (an empty
    ``nn.Sequential`` when ``act_cfg`` is None, as the official code); keys ``0.weight``,
    ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        build_batch_norm(norm_cfg, out_channels),
        nn.Sequential() if act_cfg is None else build_nonlinear(act_cfg, 'act_cfg'))


class GhostModuleBase(ReparamBlock):
    """What both ghost modules share (:class:`RepGhostModule`, ``csla.RepOptGhostModule``).

    ``x1 = primary_conv(x)`` (:func:`ghost_primary_conv`), then a depthwise "cheap
    operation" on ``x1`` with linear side branches; the deploy form is one same-size depthwise
    conv with bias, ``cheap_operation`` (``(C, 1, k, k)``, ``k = dw_size``), whose geometry is
    not the block's ``in_channels -> out_channels``. Activation: ``act_cfg`` (the official
    ``relu=True`` is ``dict(type='ReLU', inplace=True)``, ``relu=False`` is None), after the
    primary conv and at the end.
    """

    fused_name = 'cheap_operation'

    def _init_ghost(self, owner: str, in_channels: int, out_channels: int,
                    act_cfg: Optional[dict], dw_size: int, norm_cfg: Optional[dict],
                    deploy: bool) -> None:
        """Check the sizes, set ``out_channels``, ``dw_size``, ``deploy`` and build
        ``primary_conv`` (the first sub-module of both ghost modules)."""
        check_ints(owner, 1, in_channels=in_channels, out_channels=out_channels, dw_size=dw_size)
        self.out_channels, self.dw_size, self.deploy = out_channels, dw_size, deploy
        self.primary_conv = ghost_primary_conv(in_channels, out_channels, act_cfg, norm_cfg)

    def _make_depthwise_conv(self, bias: bool = False) -> nn.Conv2d:
        """The same-size depthwise conv of the cheap operation: without bias in training
        form, with bias as the fused operator."""
        return nn.Conv2d(self.out_channels, self.out_channels, self.dw_size, 1, self.dw_size // 2,
                         groups=self.out_channels, bias=bias)

    def _make_fused_conv(self) -> nn.Conv2d:
        return self._make_depthwise_conv(bias=True)


class RepGhostModule(GhostModuleBase):
    """The structural RepGhost module (module docstring), official names.

    ``primary_conv.{0,1}`` (1x1 conv, BN), ``cheap_operation.{0,1}`` (depthwise conv, BN),
    ``fusion_bn.0`` (identity BN); deploy: ``cheap_operation`` is one depthwise conv with bias.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels (= channels of the primary conv).
        act_cfg (dict, optional): activation after the primary conv and at the end; None for
            none. Default ``dict(type='ReLU', inplace=True)`` (the official ``relu=True``).
        dw_size (int): kernel size of the cheap depthwise conv. Default 3.
        norm_cfg (dict): a BatchNorm config. Default ``dict(type='BN')``.
        deploy (bool): build the fused form directly. Default False.
    """

    branch_names = ('fusion_bn',)

    def __init__(self, in_channels: int, out_channels: int, act_cfg: Optional[dict] = RELU,
                 dw_size: int = 3, norm_cfg: Optional[dict] = None,
                 deploy: bool = False) -> None:
        super().__init__()
        self._init_ghost('RepGhostModule', in_channels, out_channels, act_cfg, dw_size,
                         norm_cfg, deploy)
        if deploy:
            self._init_deploy_form()
        else:
            self.cheap_operation = nn.Sequential(self._make_depthwise_conv(),
                                                 build_batch_norm(norm_cfg, out_channels))
            self.fusion_bn = nn.ModuleList([build_batch_norm(norm_cfg, out_channels)])
        self.relu = build_nonlinear(act_cfg, 'act_cfg')

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        out = self.cheap_operation(x1)
        if not self.deploy:
            out = out + self.fusion_bn[0](x1)
        return self.relu(out)

    def _fold_branches(self) -> KernelBias:
        weight = self.cheap_operation[0].weight
        eye = identity_kernel(self.out_channels, self.out_channels, 1, dtype=weight.dtype,
                              device=weight.device)
        return sum_branches([fuse_bn(weight, self.cheap_operation[1]),
                             fuse_bn(eye, self.fusion_bn[0])], self.dw_size)


GhostFactory = Callable[..., nn.Module]  # (in_channels, out_channels, act_cfg=...) -> module


class RepGhostBottleneck(nn.Module):
    """Ghost bottleneck: ``ghost2(SE(dw_s(ghost1(x)))) + shortcut(x)`` (official names).

    ``conv_dw`` / ``bn_dw`` (strided depthwise conv + BN) exist when ``stride > 1``, ``se`` when
    ``se_ratio > 0``; ``shortcut`` is the identity when shapes allow, else depthwise conv + BN +
    1x1 conv + BN (``shortcut.{0,1,2,3}``).

    Args:
        in_channels (int): input channels.
        mid_channels (int): channels of the expansion (``ghost1`` output).
        out_channels (int): output channels.
        dw_kernel_size (int): kernel size of ``conv_dw`` and the shortcut's depthwise conv.
        stride (int): 1 or 2.
        se_ratio (float): squeeze-excite ratio, 0 for none.
        ghost_module (callable): ``(in, out, act_cfg=dict | None) -> module`` building the
            ghost modules (``ghost1`` with ReLU, ``ghost2`` without).
        norm_cfg (dict): a BatchNorm config.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int,
                 dw_kernel_size: int = 3, stride: int = 1, se_ratio: float = 0.0,
                 ghost_module: GhostFactory = RepGhostModule,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_ints('RepGhostBottleneck', 1, in_channels=in_channels, mid_channels=mid_channels,
                   out_channels=out_channels, dw_kernel_size=dw_kernel_size)
        check_ratio('RepGhostBottleneck', 'se_ratio', se_ratio, allow_zero=True,
                    meaning='0 means no squeeze-excite')
        if stride not in (1, 2):
            raise ValueError(f'a ghost bottleneck has stride 1 or 2, got {stride}')
        self.stride = stride
        padding = (dw_kernel_size - 1) // 2
        self.ghost1 = ghost_module(in_channels, mid_channels, act_cfg=RELU)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_channels, mid_channels, dw_kernel_size, stride, padding,
                                     groups=mid_channels, bias=False)
            self.bn_dw = build_batch_norm(norm_cfg, mid_channels)
        self.se = GhostSqueezeExcite(mid_channels, se_ratio) if se_ratio > 0 else None
        self.ghost2 = ghost_module(mid_channels, out_channels, act_cfg=None)
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, dw_kernel_size, stride, padding,
                          groups=in_channels, bias=False),
                build_batch_norm(norm_cfg, in_channels),
                nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
                build_batch_norm(norm_cfg, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)
