"""RepVGG backbone (https://arxiv.org/abs/2101.03697) with every official arch.

A stem block ``stage0`` followed by four stages ``stage1..stage4`` of :class:`RepVGGBlock`
(``nn.Sequential``; the first block of a stage strides). Names follow the official code so the
released checkpoints load with ``strict=True``.
"""
from typing import Dict, Optional, Sequence

from ..blocks import RepVGGBlock
from ..blocks._checks import is_int
from ..registry import MODELS
from .base import VGGLayoutBackbone, check_vgg_layout, validate_arch

# the official "groupwise" layers of B1g2 / B1g4 / ...: every even layer index of stages 1-4
_GROUPWISE_LAYERS = tuple(range(2, 27, 2))
_G2 = {layer: 2 for layer in _GROUPWISE_LAYERS}
_G4 = {layer: 4 for layer in _GROUPWISE_LAYERS}


def _arch(num_blocks, width_factor, group_layer_map=None, se_position=None, se_ratio=16) -> Dict:
    return dict(num_blocks=num_blocks, width_factor=width_factor,
                group_layer_map=group_layer_map, se_position=se_position, se_ratio=se_ratio)


_A, _B, _D = (2, 4, 14, 1), (4, 6, 16, 1), (8, 14, 24, 1)


@MODELS.register_module()
class RepVGG(VGGLayoutBackbone):
    """RepVGG: a plain VGG-style network at inference, multi-branch in training.

    Args:
        arch (str | dict): a name in ``RepVGG.arch_settings`` or a dict with keys
            ``num_blocks`` (4 ints), ``width_factor`` (4 floats), and optionally
            ``group_layer_map`` (``{layer index: groups}``; layer 0 is the stem, layer 1 the
            first block of stage1), ``se_position`` (None | 'pre' | 'post'), ``se_ratio``.
        in_channels (int): image channels. Default 3.
        base_channels (Sequence[int]): stage widths before ``width_factor``.
            Default (64, 128, 256, 512).
        strides (Sequence[int]): strides of the stem and the 4 stages. Default (2, 2, 2, 2, 2).
        dilations (Sequence[int]): dilations of the stem and the 4 stages (e.g.
            (1, 1, 1, 2, 4) with strides (2, 2, 2, 1, 1) for an output stride of 8).
            Default (1, 1, 1, 1, 1).
        out_indices (Sequence[int]): stages 0..3 (= stage1..stage4) whose outputs are returned.
            Default (3,).
        frozen_stages (int): freeze the stem and this many stages; -1 freezes nothing.
        norm_eval (bool): keep BatchNorms in eval mode while training. Default False.
        norm_cfg (dict): branch norms (BN, SyncBN, ...). Default ``dict(type='BN')``.
        act_cfg (dict): activation. Default ``dict(type='ReLU', inplace=True)``.
        with_cp (bool): gradient checkpointing in each block. Default False.
        deploy (bool): build the fused form directly (loads converted checkpoints).
        init_cfg (dict | list, optional): mmengine initialisation config.

    Shapes: ``(N, in_channels, H, W)`` -> tuple of ``(N, C_i, H / s_i, W / s_i)``.
    """

    arch_settings = {
        'A0': _arch(_A, (0.75, 0.75, 0.75, 2.5)),
        'A1': _arch(_A, (1, 1, 1, 2.5)),
        'A2': _arch(_A, (1.5, 1.5, 1.5, 2.75)),
        'B0': _arch(_B, (1, 1, 1, 2.5)),
        'B1': _arch(_B, (2, 2, 2, 4)),
        'B1g2': _arch(_B, (2, 2, 2, 4), _G2),
        'B1g4': _arch(_B, (2, 2, 2, 4), _G4),
        'B2': _arch(_B, (2.5, 2.5, 2.5, 5)),
        'B2g2': _arch(_B, (2.5, 2.5, 2.5, 5), _G2),
        'B2g4': _arch(_B, (2.5, 2.5, 2.5, 5), _G4),
        'B3': _arch(_B, (3, 3, 3, 5)),
        'B3g2': _arch(_B, (3, 3, 3, 5), _G2),
        'B3g4': _arch(_B, (3, 3, 3, 5), _G4),
        'D2se': _arch(_D, (2.5, 2.5, 2.5, 5), se_position='pre', se_ratio=16),
    }

    def __init__(self, arch='A0', in_channels: int = 3,
                 base_channels: Sequence[int] = (64, 128, 256, 512),
                 strides: Sequence[int] = (2, 2, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1, 1),
                 out_indices: Sequence[int] = (3,), frozen_stages: int = -1,
                 norm_eval: bool = False, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU', inplace=True), with_cp: bool = False,
                 deploy: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = validate_arch(arch, self.arch_settings, ('num_blocks', 'width_factor'), 'RepVGG')
        check_vgg_layout(arch, strides, base_channels, dilations)
        self.arch = arch
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        group_layer_map = arch.get('group_layer_map') or {}
        check_repvgg_options(arch, group_layer_map, in_channels)
        block_cfg = dict(se_position=arch.get('se_position'), se_ratio=arch.get('se_ratio', 16),
                         norm_cfg=norm_cfg, act_cfg=act_cfg, with_cp=with_cp, deploy=deploy)

        self._add_vgg_stages(
            lambda cin, cout, stride, stage, index: RepVGGBlock(
                cin, cout, 3, stride=stride, dilation=dilations[stage],
                groups=group_layer_map.get(index, 1), **block_cfg),
            in_channels, arch, base_channels, strides)
        self._freeze_stages()


def check_repvgg_options(arch: dict, group_layer_map, in_channels) -> None:
    """``group_layer_map`` ({layer index >= 0: groups >= 1}), ``se_ratio`` (int >= 1 when there
    is an SE block) and ``in_channels`` (int >= 1) of a RepVGG / RepVGGplus arch."""
    if not is_int(in_channels):
        raise ValueError(f'in_channels must be an int >= 1, got {in_channels!r}')
    if not isinstance(group_layer_map, dict) or not all(
            is_int(k, 0) and is_int(v) for k, v in group_layer_map.items()):
        raise ValueError(f"arch['group_layer_map'] must map layer indices (ints >= 0, 0 = stem) "
                         f"to groups (ints >= 1), got {group_layer_map!r}")
    if arch.get('se_position') is not None and not is_int(arch.get('se_ratio', 16)):
        raise ValueError(f"arch['se_ratio'] must be an int >= 1 (the SE bottleneck has "
                         f"C_out // se_ratio channels), got {arch.get('se_ratio')!r}")
