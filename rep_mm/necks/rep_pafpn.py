"""RepPAFPN: a PAFPN neck whose fusion blocks are RepVGG blocks (as in YOLOv6's Rep-PAN)."""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn import functional as F

from ..blocks import RepVGGBlock
from ..registry import MODELS
from ..reparam import reparameterize


def rep_stage(in_channels: int, out_channels: int, num_blocks: int, **block_cfg) -> nn.Sequential:
    """``num_blocks`` RepVGG blocks, the first mapping ``in_channels -> out_channels``."""
    return nn.Sequential(*(RepVGGBlock(in_channels if i == 0 else out_channels, out_channels,
                                       **block_cfg) for i in range(num_blocks)))


@MODELS.register_module()
class RepPAFPN(BaseModule):
    """Path-aggregation FPN built from re-parameterizable blocks.

    Top-down: ``t_i = Rep(concat(lateral_i(x_i), up(t_{i+1})))``; bottom-up:
    ``o_i = Rep(concat(t_i, down(o_{i-1})))``, where ``lateral`` is a 1x1 conv-BN-ReLU, ``Rep`` a
    stack of :class:`RepVGGBlock` and ``down`` a stride-2 RepVGG block; extra levels (for
    RetinaNet-style heads) are stride-2 RepVGG blocks on the last output. Every RepVGG block
    folds into one 3x3 conv with ``switch_to_deploy()`` / :func:`rep_mm.reparameterize`.

    Args:
        in_channels (Sequence[int]): channels of the backbone levels (finest first).
        out_channels (int): channels of every output level.
        num_outs (int): number of outputs (>= len(in_channels)). Default len(in_channels).
        num_repeats (int): RepVGG blocks per fusion stage. Default 1.
        norm_cfg (dict): BatchNorm config. act_cfg (dict): activation. deploy (bool).
        init_cfg (dict | list, optional): mmengine initialisation config.

    Shapes: a tuple of ``(N, in_channels[i], H_i, W_i)`` -> a tuple of ``num_outs`` maps
    ``(N, out_channels, H_i, W_i)`` (extra levels halve the size each time).
    """

    is_reparam_container = True

    def __init__(self, in_channels: Sequence[int], out_channels: int,
                 num_outs: Optional[int] = None, num_repeats: int = 1,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = dict(type='ReLU', inplace=True),
                 deploy: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        from mmcv.cnn import ConvModule

        levels = len(in_channels)
        num_outs = levels if num_outs is None else num_outs
        if levels < 2 or num_outs < levels:
            raise ValueError(f'RepPAFPN needs at least 2 input levels and num_outs >= levels; '
                             f'got in_channels={list(in_channels)}, num_outs={num_outs}')
        self.in_channels, self.out_channels, self.num_outs = list(in_channels), out_channels, num_outs
        self.deploy = deploy
        block_cfg = dict(norm_cfg=norm_cfg, act_cfg=act_cfg, deploy=deploy)
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm_cfg=norm_cfg or dict(type='BN'), act_cfg=act_cfg)
            for c in in_channels)
        self.top_down_blocks = nn.ModuleList(
            rep_stage(2 * out_channels, out_channels, num_repeats, **block_cfg)
            for _ in range(levels - 1))
        self.downsamples = nn.ModuleList(
            RepVGGBlock(out_channels, out_channels, stride=2, **block_cfg)
            for _ in range(levels - 1))
        self.bottom_up_blocks = nn.ModuleList(
            rep_stage(2 * out_channels, out_channels, num_repeats, **block_cfg)
            for _ in range(levels - 1))
        self.extra_blocks = nn.ModuleList(
            RepVGGBlock(out_channels, out_channels, stride=2, **block_cfg)
            for _ in range(num_outs - levels))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'RepPAFPN was built for {len(self.in_channels)} levels '
                             f'(in_channels={self.in_channels}) but got {len(inputs)}')
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        top_down: List[Tensor] = [laterals[-1]]
        for i in range(len(laterals) - 2, -1, -1):
            upsampled = F.interpolate(top_down[0], size=laterals[i].shape[-2:], mode='nearest')
            top_down.insert(0, self.top_down_blocks[i](torch.cat([laterals[i], upsampled], 1)))
        outs = [top_down[0]]
        for i in range(1, len(top_down)):
            down = self.downsamples[i - 1](outs[-1])
            if down.shape[-2:] != top_down[i].shape[-2:]:
                down = F.interpolate(down, size=top_down[i].shape[-2:], mode='nearest')
            outs.append(self.bottom_up_blocks[i - 1](torch.cat([top_down[i], down], 1)))
        for block in self.extra_blocks:
            outs.append(block(outs[-1]))
        return tuple(outs)

    def switch_to_deploy(self) -> None:
        """Fold every RepVGG block of the neck (idempotent)."""
        reparameterize(self)

    def after_reparameterize(self) -> None:
        self.deploy = True
