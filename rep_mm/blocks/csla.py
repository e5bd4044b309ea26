"""Scale layers and the CSLA blocks of RepOptimizer (https://arxiv.org/abs/2205.15242).

A *CSLA* block (Constant-Scale Linear Addition) adds linear branches, each multiplied by a
per-channel scale, before one BatchNorm. For RepOpt-VGG (``x``: ``(N, C_in, H, W)``)::

    y = act(BN(s_conv * conv3x3(x; W) + s_1x1 * conv1x1(x; K1) [+ s_id * x]))

which equals ``act(BN(conv3x3(x; W')))`` with (:func:`rep_mm.fusion.csla_kernel`)::

    W' = s_conv * W + pad(s_1x1 * K1) [+ s_id * I]

Three forms (``mode``) share the official parameter names:

* ``'target'``: ``conv`` + ``bn`` only: what trains with RepOptSGD / RepOptAdamW and deploys;
* ``'hs'``: Hyper-Search: all branches with *trainable* scales (``scale_conv``, ``scale_1x1``,
  ``scale_identity``); the searched scales are then read from its checkpoint;
* ``'csla'``: the same branches with constant ``scale_conv`` / ``scale_1x1`` (buffers). Its
  identity scale stays a trainable parameter: the official grad mult adds exactly ``1`` on the
  identity's diagonal centre, which is the gradient contribution of a trainable identity scale,
  so plain SGD / AdamW on this form (identity scale decayed like the kernels) is what
  RepOptSGD / RepOptAdamW on the target form reproduces (GR = CSLA).

RepOpt-GhostNet's ghost module is the depthwise analogue: ``final_bn(s * dw(x1; W) + f * x1)``.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..fusion import KernelBias, csla_kernel, fuse_bn
from ..reparam import ReparamBlock
from .conv_bn import build_batch_norm
from .nonlinear import build_nonlinear
from .repghost import RELU, GhostModuleBase
from ._checks import check_conv_args, check_ints, check_ratio

MODES = ('target', 'hs', 'csla')

__all__ = ['MODES', 'ScaleLayer', 'csla_kernel', 'RepOptVGGBlock', 'RepOptGhostModule']


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise a clear error."""
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES} (target: conv+BN trained by RepOptimizer; '
                         f'hs: Hyper-Search with trainable scales; csla: constant scales), '
                         f'got {mode!r}')
    return mode


class ScaleLayer(nn.Module):
    """Per-channel scale ``y[:, c] = weight[c] * x[:, c]``.

    Args:
        num_features (int): channels ``C``.
        init (float): initial value of every scale. Default 1.0.
        trainable (bool): ``weight`` is a Parameter (Hyper-Search) or a buffer (a CSLA constant;
            it keeps the state_dict name ``weight``). Default True.
    """

    def __init__(self, num_features: int, init: float = 1.0, trainable: bool = True) -> None:
        super().__init__()
        check_ints('ScaleLayer', 1, num_features=num_features)
        check_ratio('ScaleLayer', 'init', init, allow_zero=True)
        value = torch.full((num_features,), float(init))
        if trainable:
            self.weight = nn.Parameter(value)
        else:
            self.register_buffer('weight', value)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1)


class RepOptVGGBlock(ReparamBlock):
    """RepOpt-VGG block: ``act(BN(conv3x3))`` (target) or its CSLA / Hyper-Search form.

    Names follow the official code: ``conv``, ``scale_conv``, ``conv_1x1``, ``scale_1x1``,
    ``scale_identity``, ``bn``; the deploy form (BN folded) is ``rbr_reparam``, a 3x3 conv
    (stride ``stride``, padding 1).

    Args:
        in_channels (int): ``C_in``.
        out_channels (int): ``C_out``.
        stride (int): stride of the 3x3 and 1x1 convs. Default 1.
        mode (str): ``'target'``, ``'hs'`` or ``'csla'`` (module docstring). Default 'target'.
        use_identity (bool): identity branch (hs / csla) where ``C_in == C_out`` and stride 1.
        norm_cfg (dict): a BatchNorm config. Default ``dict(type='BN')``.
        act_cfg (dict, optional): activation. Default ``dict(type='ReLU', inplace=True)``.
        deploy (bool): build the BN-folded form directly. Default False.
    """

    fused_name = 'rbr_reparam'
    branch_names = ('conv', 'scale_conv', 'conv_1x1', 'scale_1x1', 'scale_identity', 'bn')
    kernel_size, padding, dilation, groups = 3, 1, 1, 1  # of the 3x3 conv and the fused one

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 mode: str = 'target', use_identity: bool = True,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU', inplace=True),
                 deploy: bool = False) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        check_conv_args('RepOptVGGBlock', in_channels, out_channels, 3, stride)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.deploy = deploy
        # the hs / csla forms have an identity branch here (a target block keeps the flag: its
        # scales file then holds scale_identity, used for the re-initialisation and grad mults)
        self.has_identity = use_identity and in_channels == out_channels and stride == 1
        self.relu = build_nonlinear(act_cfg, 'act_cfg')
        if deploy:
            self._init_deploy_form()
            return
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        if mode != 'target':
            constant = mode == 'csla'
            self.scale_conv = ScaleLayer(out_channels, trainable=not constant)
            self.conv_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
            self.scale_1x1 = ScaleLayer(out_channels, trainable=not constant)
            if self.has_identity:
                self.scale_identity = ScaleLayer(out_channels, trainable=True)
        self.bn = build_batch_norm(norm_cfg, out_channels)

    def scale_names(self) -> Tuple[str, ...]:
        """Names (relative to the block) of the scales of the hs / csla form."""
        names = ('scale_conv.weight', 'scale_1x1.weight')
        return names + ('scale_identity.weight',) if self.has_identity else names

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.relu(self.rbr_reparam(x))
        out = self.conv(x)
        if self.mode != 'target':
            out = self.scale_conv(out) + self.scale_1x1(self.conv_1x1(x))
            if self.has_identity:
                out = out + self.scale_identity(x)
        return self.relu(self.bn(out))

    def conv_kernel(self) -> Tensor:
        """The 3x3 kernel before BN: ``W`` (target) or the CSLA kernel ``W'``."""
        if self.mode == 'target':
            return self.conv.weight
        return csla_kernel(self.conv.weight, self.scale_conv.weight, self.conv_1x1.weight,
                           self.scale_1x1.weight,
                           self.scale_identity.weight if self.has_identity else None)

    def _fold_branches(self) -> KernelBias:
        return fuse_bn(self.conv_kernel(), self.bn)


class RepOptGhostModule(GhostModuleBase):
    """RepOpt-GhostNet ghost module: ``act(final_bn(dw(x1)))`` with ``x1 = primary_conv(x)``.

    hs / csla form: ``act(final_bn(s * dw(x1) + f * x1))`` with ``s = cheap_operation.1`` and
    ``f = fusion_scale`` (per channel); the target kernel is ``s * W + f * I`` (depthwise).
    Names follow the official code (``primary_conv.{0,1}``, ``cheap_operation.{0,1}``,
    ``fusion_scale``, ``final_bn``); the deploy form folds ``final_bn`` into ``cheap_operation``
    (one depthwise conv with bias).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels (= channels of the primary 1x1 conv).
        act_cfg (dict, optional): activation after the primary conv and at the end; None for
            none. Default ``dict(type='ReLU', inplace=True)`` (the official ``relu=True``).
        mode (str): ``'target'``, ``'hs'`` or ``'csla'``. Default 'target'.
        dw_size (int): kernel size of the cheap depthwise conv. Default 3.
        norm_cfg (dict): a BatchNorm config. Default ``dict(type='BN')``.
        deploy (bool): build the folded form directly. Default False.
    """

    branch_names = ('fusion_scale', 'final_bn')

    def __init__(self, in_channels: int, out_channels: int, act_cfg: Optional[dict] = RELU,
                 mode: str = 'target', dw_size: int = 3, norm_cfg: Optional[dict] = None,
                 deploy: bool = False) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self._init_ghost('RepOptGhostModule', in_channels, out_channels, act_cfg, dw_size,
                         norm_cfg, deploy)
        if deploy:
            self._init_deploy_form()
        else:
            if mode != 'target':
                self.fusion_scale = ScaleLayer(out_channels, trainable=True)
            self.final_bn = build_batch_norm(norm_cfg, out_channels)
            cheap = [self._make_depthwise_conv()]
            if mode != 'target':
                cheap.append(ScaleLayer(out_channels, trainable=mode == 'hs'))
            self.cheap_operation = nn.Sequential(*cheap)
        self.relu = build_nonlinear(act_cfg, 'act_cfg')

    def scale_names(self) -> Tuple[str, ...]:
        """Names (relative to the module) of the scales of the hs / csla form."""
        return ('fusion_scale.weight', 'cheap_operation.1.weight')

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        out = self.cheap_operation(x1)
        if self.deploy:
            return self.relu(out)
        if self.mode != 'target':
            out = out + self.fusion_scale(x1)
        return self.relu(self.final_bn(out))

    def conv_kernel(self) -> Tensor:
        """The depthwise kernel before ``final_bn``: ``W`` (target) or ``s * W + f * I``."""
        weight = self.cheap_operation[0].weight
        if self.mode == 'target':
            return weight
        return csla_kernel(weight, self.cheap_operation[1].weight,
                           scale_identity=self.fusion_scale.weight, groups=self.out_channels)

    def _fold_branches(self) -> KernelBias:
        return fuse_bn(self.conv_kernel(), self.final_bn)
