"""RepVGGplus backbone (L2pse): RepVGG blocks with SE after the activation, stage 3 split in two.

Stages ``stage0`` (stem block), ``stage1``, ``stage2``, ``stage3_first``, ``stage3_second``,
``stage4``; each non-stem stage keeps its blocks in ``.blocks`` as in the official code. The
official model also owns three auxiliary classifiers (``stage1_aux``, ``stage2_aux``,
``stage3_first_aux``) and ``linear``: in rep_mm they belong to the classification head
(:class:`rep_mm.heads.RepVGGplusClsHead`), which consumes the features this backbone returns.
"""
from typing import Optional, Sequence

from torch import Tensor, nn
from torch.utils import checkpoint as cp

from ..blocks import RepVGGBlock
from ..registry import MODELS
from .base import ReparamBackbone, check_vgg_layout, validate_arch
from .repvgg import check_repvgg_options


class RepVGGplusStage(nn.Module):
    """A sequence of RepVGGplus blocks kept in ``self.blocks`` (official name)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, stride: int,
                 dilation: int = 1, with_cp: bool = False, **block_cfg) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            RepVGGBlock(in_channels if i == 0 else out_channels, out_channels, 3,
                        stride=stride if i == 0 else 1, dilation=dilation, **block_cfg)
            for i in range(num_blocks))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class RepVGGplus(ReparamBackbone):
    """RepVGGplus (https://github.com/DingXiaoH/RepVGG, RepVGGplus-L2pse).

    Args:
        arch (str | dict): ``'L2pse'`` or a dict with ``num_blocks`` (4 ints; stage 3 is split
            into ``num_blocks[2] // 2`` + the rest), ``width_factor`` (4 floats), optionally
            ``se_position`` (default 'post') and ``se_ratio`` (default 4).
        in_channels (int): image channels. Default 3.
        strides (Sequence[int]): stem, stage1, stage2, stage3, stage4. Default all 2.
        dilations (Sequence[int]): same layout as ``strides``. Default all 1.
        out_indices (Sequence[int]): indices into (stage1, stage2, stage3_first, stage3_second,
            stage4). Default (4,). The auxiliary head needs (0, 1, 2, 4).
        frozen_stages, norm_eval, norm_cfg, act_cfg, with_cp, deploy, init_cfg: as
            :class:`rep_mm.backbones.RepVGG`.
    """

    arch_settings = {
        'L2pse': dict(num_blocks=(8, 14, 24, 1), width_factor=(2.5, 2.5, 2.5, 5),
                      se_position='post', se_ratio=4),
    }
    stage_names = ('stage0', 'stage1', 'stage2', 'stage3_first', 'stage3_second', 'stage4')
    out_stage_names = stage_names[1:]

    def __init__(self, arch='L2pse', in_channels: int = 3,
                 strides: Sequence[int] = (2, 2, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1, 1),
                 out_indices: Sequence[int] = (4,), frozen_stages: int = -1,
                 norm_eval: bool = False, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU', inplace=True), with_cp: bool = False,
                 deploy: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = validate_arch(arch, self.arch_settings, ('num_blocks', 'width_factor'),
                             'RepVGGplus')
        if len(arch['num_blocks']) != 4 or len(arch['width_factor']) != 4:
            raise ValueError(f'arch needs 4 num_blocks and 4 width_factor entries, got {arch}')
        if len(strides) != 5 or len(dilations) != 5:
            raise ValueError(f'strides and dilations need 5 entries (stem + 4 stages), got '
                             f'{tuple(strides)} and {tuple(dilations)}')
        check_vgg_layout(arch, strides, (64, 128, 256, 512), dilations)
        check_repvgg_options(dict(arch, se_position=arch.get('se_position', 'post'),
                                  se_ratio=arch.get('se_ratio', 4)), {}, in_channels)
        if arch['num_blocks'][2] < 2:
            raise ValueError(f"RepVGGplus splits stage3 into stage3_first and stage3_second, so "
                             f"arch['num_blocks'][2] must be >= 2, got {arch['num_blocks'][2]}")
        self.arch = arch
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        block_cfg = dict(se_position=arch.get('se_position', 'post'),
                         se_ratio=arch.get('se_ratio', 4), norm_cfg=norm_cfg, act_cfg=act_cfg,
                         deploy=deploy)
        widths = [int(c * w) for c, w in zip((64, 128, 256, 512), arch['width_factor'])]
        stem_channels = min(64, int(64 * arch['width_factor'][0]))
        self.stage0 = RepVGGBlock(in_channels, stem_channels, 3, stride=strides[0],
                                  dilation=dilations[0], **block_cfg)
        n1, n2, n3, n4 = arch['num_blocks']
        plan = (  # name, in, out, blocks, stride, dilation
            ('stage1', stem_channels, widths[0], n1, strides[1], dilations[1]),
            ('stage2', widths[0], widths[1], n2, strides[2], dilations[2]),
            ('stage3_first', widths[1], widths[2], n3 // 2, strides[3], dilations[3]),
            ('stage3_second', widths[2], widths[2], n3 - n3 // 2, 1, dilations[3]),
            ('stage4', widths[2], widths[3], n4, strides[4], dilations[4]),
        )
        for name, c_in, c_out, num, stride, dilation in plan:
            self.add_module(name, RepVGGplusStage(c_in, c_out, num, stride, dilation,
                                                  with_cp=with_cp, **block_cfg))
        self.out_channels = tuple(p[2] for p in plan)
        self._freeze_stages()
