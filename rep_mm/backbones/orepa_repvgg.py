"""OREPA RepVGG backbone (https://arxiv.org/abs/2204.00826): RepVGG-A0/A1/A2 of OREPA blocks.

The layout of :class:`rep_mm.backbones.RepVGG` (a stem block ``stage0``, then ``stage1..stage4``
as ``nn.Sequential``; the first block of a stage strides), built of
:class:`rep_mm.blocks.OREPARepVGGBlock` (an OREPA kernel as the dense branch, a 1x1 conv-BN and
an identity BN). Names follow the official ``RepVGG_OREPA`` models, so the released checkpoints
load with ``strict=True`` (backbone part; the classifier ``linear`` belongs to the head). At
deploy every block is one conv with bias (``rbr_reparam``).
"""
from typing import Optional, Sequence

from ..blocks import OREPARepVGGBlock
from ..registry import MODELS
from .base import VGGLayoutBackbone, check_vgg_layout, validate_arch

_A = (2, 4, 14, 1)


@MODELS.register_module()
class OREPARepVGG(VGGLayoutBackbone):
    """RepVGG whose blocks carry an online re-parameterized (OREPA) dense branch.

    Args:
        arch (str | dict): ``'A0'``, ``'A1'``, ``'A2'`` or a dict with ``num_blocks`` (4 ints)
            and ``width_factor`` (4 floats).
        in_channels (int): image channels. Default 3.
        base_channels (Sequence[int]): stage widths before ``width_factor``.
            Default (64, 128, 256, 512).
        strides (Sequence[int]): strides of the stem and the 4 stages. Default (2, 2, 2, 2, 2).
        dilations (Sequence[int]): dilations of the stem and the 4 stages. Default all 1.
        out_indices (Sequence[int]): stages 0..3 (= stage1..stage4) to return. Default (3,).
        frozen_stages (int): freeze the stem and this many stages; -1 freezes nothing.
        norm_eval (bool): keep BatchNorms in eval mode while training. Default False.
        norm_cfg (dict, optional): BatchNorm config of the branches. Default ``dict(type='BN')``.
        use_se (bool): squeeze-excitation in every block. Default False.
        deploy (bool): build the fused form directly (loads converted checkpoints).
        init_cfg (dict | list, optional): mmengine initialisation config.

    Shapes: ``(N, in_channels, H, W)`` -> tuple of ``(N, C_i, H / s_i, W / s_i)``.
    """

    arch_settings = {
        'A0': dict(num_blocks=_A, width_factor=(0.75, 0.75, 0.75, 2.5)),
        'A1': dict(num_blocks=_A, width_factor=(1, 1, 1, 2.5)),
        'A2': dict(num_blocks=_A, width_factor=(1.5, 1.5, 1.5, 2.75)),
    }

    def __init__(self, arch='A0', in_channels: int = 3,
                 base_channels: Sequence[int] = (64, 128, 256, 512),
                 strides: Sequence[int] = (2, 2, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1, 1),
                 out_indices: Sequence[int] = (3,), frozen_stages: int = -1,
                 norm_eval: bool = False, norm_cfg: Optional[dict] = None,
                 use_se: bool = False, deploy: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = validate_arch(arch, self.arch_settings, ('num_blocks', 'width_factor'),
                             'OREPARepVGG')
        check_vgg_layout(arch, strides, base_channels, dilations)
        self.arch = arch
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        block_cfg = dict(deploy=deploy, use_se=use_se, norm_cfg=norm_cfg)

        self._add_vgg_stages(
            lambda cin, cout, stride, stage, index: OREPARepVGGBlock(
                cin, cout, 3, stride=stride, dilation=dilations[stage], **block_cfg),
            in_channels, arch, base_channels, strides)
        self._freeze_stages()
