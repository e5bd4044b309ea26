"""RepGhostNet (structural re-param) and RepOpt-GhostNet (gradient re-param) backbones.

Both share the GhostNet layout and the official names: ``conv_stem`` + ``bn1`` (stride 2),
``blocks.i.j`` (:class:`~rep_mm.blocks.repghost.RepGhostBottleneck`, one ``nn.Sequential``
per row of ``cfgs``), a last ``blocks.N.0`` 1x1 :class:`ConvBnAct`, and, with
``num_classes > 0``, the official classifier (global pool, ``conv_head`` 1x1 with bias, ReLU,
dropout, ``classifier``). Each row of ``cfgs`` lists bottlenecks
``[kernel, expansion, channels, se_ratio, stride]`` before the width multiplier.
RepGhostNet's ghost modules fold into one depthwise conv (``switch_to_deploy``);
RepOpt-GhostNet's are ``target`` / ``hs`` / ``csla`` (``rep_mm.blocks.csla``).
"""
import functools
import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..blocks._checks import is_int
from ..blocks.conv_bn import build_batch_norm
from ..blocks.csla import RepOptGhostModule, check_mode
from ..blocks.repghost import ConvBnAct, RepGhostBottleneck, RepGhostModule, make_divisible
from ..registry import MODELS
from .base import ReparamBackbone

# the RepGhostNet table (https://arxiv.org/abs/2211.06088): [k, expansion, c, se_ratio, stride]
REPGHOST_CFGS = (
    ((3, 8, 16, 0, 1),),
    ((3, 24, 24, 0, 2),),
    ((3, 36, 24, 0, 1),),
    ((5, 36, 40, 0.25, 2),),
    ((5, 60, 40, 0.25, 1),),
    ((3, 120, 80, 0, 2),),
    ((3, 100, 80, 0, 1), (3, 120, 80, 0, 1), (3, 120, 80, 0, 1), (3, 240, 112, 0.25, 1),
     (3, 336, 112, 0.25, 1)),
    ((5, 336, 160, 0.25, 2),),
    ((5, 480, 160, 0, 1), (5, 480, 160, 0.25, 1), (5, 480, 160, 0, 1), (5, 480, 160, 0.25, 1)),
)
WIDTHS = {'0.5x': 0.5, '0.58x': 0.58, '0.8x': 0.8, '1.0x': 1.0, '1.11x': 1.11, '1.3x': 1.3,
          '1.5x': 1.5, '2.0x': 2.0}


def _resolve_arch(arch) -> dict:
    if isinstance(arch, str):
        if arch not in WIDTHS:
            raise KeyError(f'unknown GhostNet arch {arch!r}; choose one of {list(WIDTHS)} or pass '
                           "a dict with keys 'width' and optionally 'cfgs'")
        return dict(width=WIDTHS[arch], cfgs=REPGHOST_CFGS)
    if not isinstance(arch, dict) or 'width' not in arch:
        raise TypeError(f"arch must be a name in {list(WIDTHS)} or a dict with 'width' (and "
                        f"optionally 'cfgs'), got {arch!r}")
    cfgs = arch.get('cfgs', REPGHOST_CFGS)
    for row in cfgs:
        for bottleneck in row:
            if len(bottleneck) != 5:
                raise ValueError(f'each bottleneck cfg is [kernel, expansion, channels, se_ratio, '
                                 f'stride], got {list(bottleneck)}')
    width = arch['width']
    if isinstance(width, bool) or not isinstance(width, (int, float)) or \
            not math.isfinite(width) or width <= 0:
        raise ValueError(f"GhostNet arch['width'] must be a finite number > 0 (the width "
                         f"multiplier, e.g. 0.5), got {width!r}")
    for row in cfgs:
        for kernel, expansion, channels, se_ratio, stride in row:
            if not all(is_int(v) for v in (kernel, expansion, channels)) or \
                    stride not in (1, 2) or \
                    isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)) or \
                    not math.isfinite(se_ratio) or se_ratio < 0:
                raise ValueError(f'bad GhostNet bottleneck cfg [kernel, expansion, channels, '
                                 f'se_ratio, stride] = '
                                 f'{[kernel, expansion, channels, se_ratio, stride]}: '
                                 f'kernel / expansion / channels are ints >= 1, se_ratio a finite '
                                 f'number >= 0 (0 = no SE), stride 1 or 2')
    return dict(width=float(width), cfgs=cfgs)


class _GhostNetBase(ReparamBackbone):
    """The GhostNet layout shared by :class:`RepGhostNet` and :class:`RepOptGhostNet`."""

    def __init__(self, arch, ghost_module, in_channels: int = 3,
                 out_indices: Sequence[int] = (-1,), num_classes: int = 0,
                 head_channels: int = 1280, dropout: float = 0.2, frozen_stages: int = -1,
                 norm_eval: bool = False, norm_cfg: Optional[dict] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = _resolve_arch(arch)
        self.arch, width = arch, arch['width']
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        channels = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_channels, channels, 3, 2, 1, bias=False)
        self.bn1 = build_batch_norm(norm_cfg, channels)
        self.act1 = nn.ReLU(inplace=True)
        stages, self.out_channels = [], ()
        expansion = 16
        for row in arch['cfgs']:
            layers = []
            for kernel, expansion, width_base, se_ratio, stride in row:
                out = make_divisible(width_base * width, 4)
                mid = make_divisible(expansion * width, 4)
                layers.append(RepGhostBottleneck(channels, mid, out, kernel, stride, se_ratio,
                                                 ghost_module, norm_cfg))
                channels = out
            stages.append(nn.Sequential(*layers))
            self.out_channels += (channels,)
        last = make_divisible(expansion * width * 2, 4)
        stages.append(nn.Sequential(ConvBnAct(channels, last, 1, norm_cfg=norm_cfg)))
        self.out_channels += (last,)
        self.blocks = nn.Sequential(*stages)
        self.out_stage_names = tuple(f'blocks.{i}' for i in range(len(stages)))
        self.out_indices = self._check_out_indices(out_indices)
        self.num_classes = num_classes
        if num_classes > 0:
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.conv_head = nn.Conv2d(last, head_channels, 1, 1, 0, bias=True)
            self.act2 = nn.ReLU(inplace=True)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(head_channels, num_classes)
        self._freeze_stages()

    def forward(self, x: Tensor):
        """Tuple of the ``out_indices`` block outputs, or logits when ``num_classes > 0``."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        outs = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        if self.num_classes <= 0:
            return tuple(outs)
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

    def _frozen_modules(self):
        yield self.conv_stem
        yield self.bn1
        for stage in list(self.blocks)[:max(self.frozen_stages, 0)]:
            yield stage


@MODELS.register_module()
class RepGhostNet(_GhostNetBase):
    """RepGhostNet (https://arxiv.org/abs/2211.06088) with structural re-parameterization.

    Args:
        arch (str | dict): a width name in ``WIDTHS`` ('0.5x', '1.0x', ...) or a dict with
            ``width`` and optionally ``cfgs`` (rows of ``[k, expansion, c, se_ratio, stride]``).
        in_channels (int): image channels. Default 3.
        out_indices (Sequence[int]): indices of ``blocks`` to return (the last is the 1x1
            ConvBnAct). Default (-1,).
        num_classes (int): > 0 adds the official classifier and returns logits. Default 0.
        head_channels (int): width of ``conv_head``. Default 1280.
        dropout (float): dropout before the classifier. Default 0.2.
        frozen_stages (int): freeze the stem and this many ``blocks``; -1 freezes nothing.
        norm_eval (bool): keep BatchNorms in eval mode while training. Default False.
        norm_cfg (dict): a BatchNorm config. Default ``dict(type='BN')``.
        deploy (bool): build the fused ghost modules directly. Default False.
        init_cfg (dict | list, optional): mmengine initialisation config.
    """

    def __init__(self, arch='0.5x', deploy: bool = False, norm_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        self.deploy = deploy
        module = functools.partial(RepGhostModule, norm_cfg=norm_cfg, deploy=deploy)
        super().__init__(arch, module, norm_cfg=norm_cfg, **kwargs)


@MODELS.register_module()
class RepOptGhostNet(_GhostNetBase):
    """RepOpt-GhostNet: RepGhostNet whose ghost modules train with RepOptimizer.

    Args:
        arch (str | dict): as :class:`RepGhostNet` (the released scales are for '0.5x').
        mode (str): ``'target'``, ``'hs'`` or ``'csla'``. Default 'target'.
        **kwargs: ``in_channels``, ``out_indices``, ``num_classes``, ``head_channels``,
            ``dropout``, ``frozen_stages``, ``norm_eval``, ``norm_cfg``, ``init_cfg`` as in
            :class:`RepGhostNet`.
    """

    def __init__(self, arch='0.5x', mode: str = 'target', deploy: bool = False,
                 norm_cfg: Optional[dict] = None, **kwargs) -> None:
        self.mode, self.deploy = check_mode(mode), deploy
        module = functools.partial(RepOptGhostModule, mode=mode, norm_cfg=norm_cfg,
                                   deploy=deploy)
        super().__init__(arch, module, norm_cfg=norm_cfg, **kwargs)
