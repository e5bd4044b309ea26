"""ResNet / ResNeXt / wide ResNet whose kxk conv-BN layers are ACB, DBB or OREPA blocks.

``conv_type`` chooses what every conv-BN pair of the residual blocks is built as:

==========  ===================  ====================  =====================  ================
conv_type   kxk convs            bottleneck 1x1 convs  stem (7x7)             basic shortcut
==========  ===================  ====================  =====================  ================
'base'      conv-BN              conv-BN               conv-BN                conv-BN
'acb'       :class:`ACBlock`     conv-BN               conv-BN                conv-BN
'dbb'       DiverseBranchBlock   conv-BN               conv-BN                conv-BN
'orepa'     :class:`OREPA`       :class:`OREPA1x1`     :class:`OREPALargeConv`  conv-BN
==========  ===================  ====================  =====================  ================

(the bottleneck shortcut is built like the bottleneck 1x1 convs). Module names follow the
official OREPA / DBB ResNets (``stage0.conv1``, ``stageN.i.{shortcut,conv1,conv2[,conv3]}``),
so their released checkpoints load with ``strict=True``; at deploy every layer is one conv with
bias (``conv``, ``orepa_reparam``, ``dbb_reparam`` ...).
"""
import math
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from ..blocks import ACBlock, DiverseBranchBlock, OREPA, OREPA1x1, OREPALargeConv
from ..blocks._checks import check_conv_args, is_int
from ..blocks.conv_bn import build_batch_norm
from ..blocks.nonlinear import build_nonlinear
from ..fusion import KernelBias, fuse_bn
from ..registry import MODELS
from ..reparam import ReparamBlock
from .base import ReparamBackbone, validate_arch

CONV_TYPES = ('base', 'acb', 'dbb', 'orepa')


RELU = dict(type='ReLU')  # the activation of the official ResNets' conv-BN-ReLU layers


class ConvBNLayer(ReparamBlock):
    """``act(BN(conv(x)))`` that folds to one conv with bias named ``conv`` (official layout).

    ``act_cfg``: an mm activation config, None (default) for none.
    """

    fused_name = 'conv'
    branch_names = ('bn',)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1,
                 act_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 deploy: bool = False) -> None:
        super().__init__()
        check_conv_args('ConvBNLayer', in_channels, out_channels, kernel_size, stride, dilation,
                        groups, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups = dilation, groups
        self.deploy = deploy
        if deploy:
            self._init_deploy_form()
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                  dilation, groups, bias=False)
            self.bn = build_batch_norm(norm_cfg, out_channels)
        self.nonlinear = build_nonlinear(act_cfg, 'act_cfg')

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return self.nonlinear(out if self.deploy else self.bn(out))

    def _fold_branches(self) -> KernelBias:
        return fuse_bn(self.conv.weight, self.bn, self.conv.bias)


def build_conv_bn(conv_type: str, in_channels: int, out_channels: int, kernel_size: int,
                  stride: int = 1, dilation: int = 1, groups: int = 1,
                  act_cfg: Optional[dict] = None, stem: bool = False,
                  norm_cfg: Optional[dict] = None, deploy: bool = False) -> nn.Module:
    """The conv-BN(-activation) layer of ``conv_type`` (table in the module docstring)."""
    padding = dilation * (kernel_size // 2)
    # ACB / DBB / OREPA take the activation under its official name ``nonlinear``
    common = dict(deploy=deploy, nonlinear=act_cfg, norm_cfg=norm_cfg)
    if conv_type == 'orepa':
        if kernel_size == 1:
            return OREPA1x1(in_channels, out_channels, 1, stride, groups=groups, **common)
        if stem:
            return OREPALargeConv(in_channels, out_channels, kernel_size, stride, padding,
                                  dilation, groups, **common)
        return OREPA(in_channels, out_channels, kernel_size, stride, padding, groups, dilation,
                     **common)
    if kernel_size > 1 and not stem and conv_type == 'dbb':
        return DiverseBranchBlock(in_channels, out_channels, kernel_size, stride, padding,
                                  dilation, groups, **common)
    if kernel_size > 1 and not stem and conv_type == 'acb':
        return ACBlock(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                       **common)
    return ConvBNLayer(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                       act_cfg, norm_cfg, deploy)


class BasicBlock(nn.Module):
    """``relu(conv2(conv1(x)) + shortcut(x))`` with two kxk conv-BN layers (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int,
                 conv_type: str, groups: int = 1, width_per_group: int = 64,
                 norm_cfg: Optional[dict] = None, deploy: bool = False) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError('BasicBlock supports only groups=1 and width_per_group=64; use '
                             'block="bottleneck" for ResNeXt')
        kw = dict(norm_cfg=norm_cfg, deploy=deploy)
        if stride != 1 or in_channels != planes:
            self.shortcut = ConvBNLayer(in_channels, planes, 1, stride, **kw)
        self.conv1 = build_conv_bn(conv_type, in_channels, planes, 3, stride, dilation,
                                   act_cfg=RELU, **kw)
        self.conv2 = build_conv_bn(conv_type, planes, planes, 3, 1, dilation, **kw)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x) if hasattr(self, 'shortcut') else x
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    """``relu(conv3(conv2(conv1(x))) + shortcut(x))``: 1x1, kxk (grouped for ResNeXt), 1x1."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int,
                 conv_type: str, groups: int = 1, width_per_group: int = 64,
                 norm_cfg: Optional[dict] = None, deploy: bool = False) -> None:
        super().__init__()
        kw = dict(norm_cfg=norm_cfg, deploy=deploy)
        width = int(planes * width_per_group / 64) * groups
        out_channels = planes * self.expansion
        if stride != 1 or in_channels != out_channels:
            self.shortcut = build_conv_bn(conv_type, in_channels, out_channels, 1, stride, **kw)
        self.conv1 = build_conv_bn(conv_type, in_channels, width, 1, act_cfg=RELU, **kw)
        self.conv2 = build_conv_bn(conv_type, width, width, 3, stride, dilation, groups,
                                   act_cfg=RELU, **kw)
        self.conv3 = build_conv_bn(conv_type, width, out_channels, 1, **kw)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x) if hasattr(self, 'shortcut') else x
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


BLOCKS = dict(basic=BasicBlock, bottleneck=Bottleneck)


def _arch(block, stage_blocks, width=1, groups=1, width_per_group=64):
    return dict(block=block, stage_blocks=stage_blocks, width=width, groups=groups,
                width_per_group=width_per_group)


@MODELS.register_module()
class ReparamResNet(ReparamBackbone):
    """ResNet family with switchable re-param conv layers (ACB / DBB / OREPA or plain).

    Args:
        arch (str | dict): a name in ``ReparamResNet.arch_settings`` (``'resnet18'``,
            ``'resnet34'``, ``'resnet50'``, ``'resnet101'``, ``'wide_resnet18'`` (2x stage
            widths), ``'resnext50_32x4d'``) or a dict with ``block`` (``'basic'`` or
            ``'bottleneck'``), ``stage_blocks`` (4 ints) and optionally ``width`` (stage width
            factor), ``groups`` and ``width_per_group`` (ResNeXt cardinality / group width).
        conv_type (str): ``'base'``, ``'acb'``, ``'dbb'`` or ``'orepa'``. Default ``'orepa'``.
        in_channels (int): image channels. Default 3.
        stem_channels (int): channels of the 7x7 stem. Default 64.
        strides (Sequence[int]): strides of stage1..stage4. Default (1, 2, 2, 2).
        dilations (Sequence[int]): dilations of stage1..stage4 (not with ``'dbb'``).
        out_indices (Sequence[int]): stages 0..3 (= stage1..stage4) to return.
            Default (0, 1, 2, 3).
        frozen_stages (int): freeze the stem and this many stages; -1 freezes nothing.
        norm_eval (bool): keep BatchNorms in eval mode while training. Default False.
        norm_cfg (dict): BatchNorm config (BN, SyncBN ...). Default ``dict(type='BN')``.
        deploy (bool): build the fused form directly (loads converted checkpoints).
        init_cfg (dict | list, optional): mmengine initialisation config.

    Shapes: ``(N, in_channels, H, W)`` -> tuple of ``(N, C_i, H / s_i, W / s_i)`` with
    ``s = 4, 8, 16, 32`` by default.
    """

    arch_settings = {
        'resnet18': _arch('basic', (2, 2, 2, 2)),
        'resnet34': _arch('basic', (3, 4, 6, 3)),
        'resnet50': _arch('bottleneck', (3, 4, 6, 3)),
        'resnet101': _arch('bottleneck', (3, 4, 23, 3)),
        'wide_resnet18': _arch('basic', (2, 2, 2, 2), width=2),
        'resnext50_32x4d': _arch('bottleneck', (3, 4, 6, 3), groups=32, width_per_group=4),
    }
    stage_names = ('stage0', 'stage1', 'stage2', 'stage3', 'stage4')
    out_stage_names = ('stage1', 'stage2', 'stage3', 'stage4')

    def __init__(self, arch='resnet18', conv_type: str = 'orepa', in_channels: int = 3,
                 stem_channels: int = 64, strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 norm_cfg: Optional[dict] = None, deploy: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = validate_arch(arch, self.arch_settings, ('block', 'stage_blocks'), 'ReparamResNet')
        if conv_type not in CONV_TYPES:
            raise ValueError(f'conv_type must be one of {CONV_TYPES}, got {conv_type!r}')
        if arch['block'] not in BLOCKS:
            raise ValueError(f"arch['block'] must be one of {sorted(BLOCKS)}, got {arch['block']!r}")
        if len(arch['stage_blocks']) != 4 or len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f"stage_blocks, strides and dilations need 4 entries (stage1..4), got "
                             f"{tuple(arch['stage_blocks'])}, {tuple(strides)}, {tuple(dilations)}")
        width = arch.get('width', 1)
        numbers = dict(in_channels=in_channels, stem_channels=stem_channels,
                       groups=arch.get('groups', 1),
                       width_per_group=arch.get('width_per_group', 64))
        bad = {k: v for k, v in numbers.items() if not is_int(v)}
        if bad or not all(is_int(v) for v in list(strides) + list(dilations)) or \
                not all(is_int(v) for v in arch['stage_blocks']) or \
                isinstance(width, bool) or not isinstance(width, (int, float)) or \
                not math.isfinite(width) or int(64 * width) < 1:
            raise ValueError(f"ReparamResNet: in_channels, stem_channels, groups, width_per_group, "
                             f"strides, dilations and stage_blocks must be ints >= 1 and "
                             f"arch['width'] a finite number with int(64 * width) >= 1; got "
                             f"{numbers}, strides={tuple(strides)}, dilations={tuple(dilations)}, "
                             f"stage_blocks={tuple(arch['stage_blocks'])}, width={width!r}")
        self.arch, self.conv_type = arch, conv_type
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        kw = dict(norm_cfg=norm_cfg, deploy=deploy)
        stem = build_conv_bn(conv_type, in_channels, stem_channels, 7, 2, act_cfg=RELU, stem=True,
                             **kw)
        self.stage0 = nn.Sequential()
        self.stage0.add_module('conv1', stem)
        self.stage0.add_module('maxpool', nn.MaxPool2d(3, 2, 1))
        block = BLOCKS[arch['block']]
        channels = stem_channels
        self.out_channels: Tuple[int, ...] = ()
        for stage, name in enumerate(self.out_stage_names):
            planes = int(64 * 2 ** stage * arch.get('width', 1))
            blocks = []
            for i in range(arch['stage_blocks'][stage]):
                blocks.append(block(channels, planes, strides[stage] if i == 0 else 1,
                                    dilations[stage], conv_type, arch.get('groups', 1),
                                    arch.get('width_per_group', 64), **kw))
                channels = planes * block.expansion
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels += (channels,)
        self._freeze_stages()
