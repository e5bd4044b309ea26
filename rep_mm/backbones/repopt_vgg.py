"""RepOpt-VGG backbone (https://arxiv.org/abs/2205.15242): a plain VGG trained by RepOptimizer.

``stage0`` (stem block) and ``stage1..stage4`` (``nn.Sequential`` of
:class:`~rep_mm.blocks.csla.RepOptVGGBlock`, the first block of a stage strides), in one of
three forms (``mode``): ``'target'`` (conv3x3 + BN + ReLU: trains with RepOptSGD /
RepOptAdamW and deploys unchanged), ``'hs'`` (Hyper-Search, trainable scales) or ``'csla'``
(constant scales). Names follow the official code, so the released target / hs checkpoints and
``*-scales.pth`` files match key for key.
"""
from typing import Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..blocks.csla import RepOptVGGBlock, check_mode
from ..registry import MODELS
from .base import VGGLayoutBackbone, check_vgg_layout, validate_arch

_B, _L = (4, 6, 16, 1), (8, 14, 24, 1)


@MODELS.register_module()
class RepOptVGG(VGGLayoutBackbone):
    """RepOpt-VGG B1 / B2 / L1 / L2 or a custom arch.

    Args:
        arch (str | dict): a name in ``RepOptVGG.arch_settings`` or a dict with
            ``num_blocks`` (4 ints) and ``width_factor`` (4 floats).
        mode (str): ``'target'``, ``'hs'`` or ``'csla'``. Default 'target'.
        in_channels (int): image channels. Default 3.
        base_channels (Sequence[int]): stage widths before ``width_factor``.
        strides (Sequence[int]): strides of the stem and the 4 stages. Default (2, 2, 2, 2, 2).
        out_indices (Sequence[int]): stages 0..3 (= stage1..stage4) to return. Default (3,).
        num_classes (int): 0 (default) for an mm backbone returning feature maps; > 0 adds the
            official classifier ``linear`` (global average pool + FC) and ``forward`` returns
            logits, as the original full model (its checkpoints then load with strict=True).
        frozen_stages (int): freeze the stem and this many stages; -1 freezes nothing.
        norm_eval (bool): keep BatchNorms in eval mode while training. Default False.
        norm_cfg (dict): a BatchNorm config. Default ``dict(type='BN')``.
        deploy (bool): build the BN-folded form directly. Default False.
        init_cfg (dict | list, optional): mmengine initialisation config.
    """

    arch_settings: Dict[str, dict] = {
        'B1': dict(num_blocks=_B, width_factor=(2, 2, 2, 4)),
        'B2': dict(num_blocks=_B, width_factor=(2.5, 2.5, 2.5, 5)),
        'L1': dict(num_blocks=_L, width_factor=(2, 2, 2, 4)),
        'L2': dict(num_blocks=_L, width_factor=(2.5, 2.5, 2.5, 5)),
    }

    def __init__(self, arch='B1', mode: str = 'target', in_channels: int = 3,
                 base_channels: Sequence[int] = (64, 128, 256, 512),
                 strides: Sequence[int] = (2, 2, 2, 2, 2), out_indices: Sequence[int] = (3,),
                 num_classes: int = 0, frozen_stages: int = -1, norm_eval: bool = False,
                 norm_cfg: Optional[dict] = None, deploy: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = validate_arch(arch, self.arch_settings, ('num_blocks', 'width_factor'),
                             'RepOptVGG')
        check_vgg_layout(arch, strides, base_channels)
        self.arch, self.mode = arch, check_mode(mode)
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        block_cfg = dict(mode=mode, norm_cfg=norm_cfg, deploy=deploy)

        channels = self._add_vgg_stages(
            lambda cin, cout, stride, stage, index: RepOptVGGBlock(cin, cout, stride=stride,
                                                                   **block_cfg),
            in_channels, arch, base_channels, strides)
        self.num_classes = num_classes
        if num_classes > 0:
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.linear = nn.Linear(channels, num_classes)
        self._freeze_stages()

    def forward(self, x: Tensor):
        """Tuple of the ``out_indices`` stage outputs, or logits when ``num_classes > 0``."""
        if self.num_classes <= 0:
            return super().forward(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.linear(torch.flatten(self.gap(x), 1))

    @torch.no_grad()
    def load_scales(self, scales: Mapping[str, Tensor]) -> None:
        """Copy searched scales (``stageK.i.scale_*.weight``) into an hs / csla model, by name.

        Raises:
            ValueError: the model is in target mode, or keys are missing / extra / mis-shaped.
        """
        if self.mode == 'target' or self.deploy:
            raise ValueError('load_scales needs an hs or csla model (a target model takes the '
                             'scales through rep_mm.optim.RepOptVGGHandler instead)')
        from ..optim.repopt.scales import match_scales
        expected = {k: v.shape for k, v in self.state_dict().items() if '.scale_' in k}
        targets = dict(self.named_parameters())
        targets.update(self.named_buffers())
        for key, value in match_scales(scales, expected).items():
            targets[key].copy_(value)
