"""RepVGGplus classification head: the final linear layer plus three auxiliary classifiers.

The official RepVGGplus model owns, besides its body, ``linear`` (on the globally pooled last
feature) and three auxiliary classifiers ``stage1_aux``, ``stage2_aux``, ``stage3_first_aux``,
each ``Sequential(conv3x3 stride 2 + BN + ReLU, AdaptiveAvgPool2d(1), Flatten, Linear)`` on the
output of stage1, stage2 and stage3_first. In rep_mm the body is :class:`rep_mm.RepVGGplus` and
these parts live here, under the official names, so an official checkpoint's head keys map 1:1
with a ``head.`` prefix.

Training loss (official recipe): ``L = CE(main) + aux_loss_weight * sum(CE(aux_i))`` with
``aux_loss_weight = 0.1``; every term is reported separately (``loss``, ``loss_aux_stage1``,
``loss_aux_stage2``, ``loss_aux_stage3_first``) and mmengine sums them. Prediction uses the main
logits only. The auxiliary classifiers are training-only: :meth:`switch_to_deploy` (called by
:func:`rep_mm.reparameterize` through :meth:`after_reparameterize`) deletes them, which leaves
exactly the official deploy keys (``linear.*``).
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from ..blocks.conv_bn import build_batch_norm
from ..registry import MODELS

__all__ = ['RepVGGplusClsHead']

AUX_NAMES = ('stage1_aux', 'stage2_aux', 'stage3_first_aux')


def _aux_classifier(channels: int, num_classes: int, norm_cfg: Optional[dict],
                    act_cfg: dict) -> nn.Sequential:
    """``conv3x3(s2)+BN+act -> global average pool -> flatten -> linear`` (official indices)."""
    from mmcv.cnn import build_activation_layer

    conv_bn_act = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
        bn=build_batch_norm(norm_cfg, channels),
        relu=build_activation_layer(dict(act_cfg))))
    return nn.Sequential(conv_bn_act, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


@MODELS.register_module()
class RepVGGplusClsHead(ClsHead):
    """Linear classifier with RepVGGplus's auxiliary classifiers (training only).

    Use with ``backbone=dict(type='rep_mm.RepVGGplus', out_indices=(0, 1, 2, 4))`` and
    ``neck=None``: the head receives ``(stage1, stage2, stage3_first, stage4)`` features.

    Args:
        num_classes (int): number of classes.
        in_channels (Sequence[int] | int): channels of (stage1, stage2, stage3_first, last
            stage), e.g. ``(160, 320, 640, 2560)`` for L2pse. A single int (the last stage)
            is allowed only with ``deploy=True``.
        aux_loss_weight (float): weight of each auxiliary loss. Default 0.1 (official).
        norm_cfg (dict, optional): norm of the auxiliary conv (a BatchNorm type).
            Default ``dict(type='BN')``.
        act_cfg (dict): activation of the auxiliary conv. Default ``dict(type='ReLU')``.
        deploy (bool): build without auxiliary classifiers (the converted form).
        loss (dict): mmpretrain loss config, used for the main and every auxiliary output.
            Default ``dict(type='CrossEntropyLoss', loss_weight=1.0)``.
        topk (int | tuple): top-k accuracy. Default (1,).
        cal_acc (bool): compute training accuracy of the main output. Default False.
        init_cfg (dict, optional): mmengine init config. Default None (PyTorch's default
            initialisation, as the official model).
    """

    is_reparam_container = True

    def __init__(self, num_classes: int, in_channels: Union[int, Sequence[int]],
                 aux_loss_weight: float = 0.1, norm_cfg: Optional[dict] = None,
                 act_cfg: dict = dict(type='ReLU'), deploy: bool = False,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 topk: Union[int, Tuple[int]] = (1, ), cal_acc: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(loss=loss, topk=topk, cal_acc=cal_acc, init_cfg=init_cfg)
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        if isinstance(in_channels, int):
            if not deploy:
                raise ValueError(
                    f'in_channels={in_channels} is a single int, but the training form needs the '
                    f'channels of (stage1, stage2, stage3_first, last stage), e.g. '
                    f'(160, 320, 640, 2560) for RepVGGplus-L2pse; a single int is only allowed '
                    f'with deploy=True')
            in_channels = (in_channels, )
        in_channels = tuple(int(c) for c in in_channels)
        if len(in_channels) != len(AUX_NAMES) + 1 and not (deploy and len(in_channels) == 1):
            raise ValueError(f'in_channels needs {len(AUX_NAMES) + 1} entries (stage1, stage2, '
                             f'stage3_first, last stage), got {in_channels}')
        self.num_classes, self.in_channels = num_classes, in_channels
        self.aux_loss_weight = float(aux_loss_weight)
        self.deploy = deploy
        self.linear = nn.Linear(in_channels[-1], num_classes)
        if not deploy:
            for name, channels in zip(AUX_NAMES, in_channels[:-1]):
                self.add_module(name, _aux_classifier(channels, num_classes, norm_cfg, act_cfg))

    @property
    def has_aux(self) -> bool:
        """Whether the auxiliary classifiers exist (training form)."""
        return all(hasattr(self, name) for name in AUX_NAMES)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """Globally average-pooled last feature ``(N, C)``."""
        last = feats[-1]
        if last.dim() == 4:
            last = F.adaptive_avg_pool2d(last, 1)
        return torch.flatten(last, 1)

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """Main logits ``(N, num_classes)`` from the last feature."""
        return self.linear(self.pre_logits(feats))

    def forward_aux(self, feats: Tuple[Tensor, ...]) -> Dict[str, Tensor]:
        """Logits of the auxiliary classifiers, keyed by their official names."""
        if not self.has_aux:
            raise RuntimeError('the auxiliary classifiers were removed by switch_to_deploy(); '
                               'only the main output exists in deploy form')
        if len(feats) != len(AUX_NAMES) + 1:
            raise ValueError(
                f'RepVGGplusClsHead needs {len(AUX_NAMES) + 1} features (stage1, stage2, '
                f'stage3_first, last stage), got {len(feats)}: build the backbone with '
                f'out_indices=(0, 1, 2, 4) and no neck')
        return {name: getattr(self, name)(feat) for name, feat in zip(AUX_NAMES, feats)}

    def forward_all(self, feats: Tuple[Tensor, ...]) -> Dict[str, Tensor]:
        """The official training-time output dict: ``main`` and every ``*_aux`` present."""
        outputs = {'main': self(feats)}
        if self.has_aux:
            outputs.update(self.forward_aux(feats))
        return outputs

    @staticmethod
    def _targets(data_samples: List[DataSample]) -> Tensor:
        if 'gt_score' in data_samples[0]:  # batch augmentations (mixup) give soft targets
            return torch.stack([sample.gt_score for sample in data_samples])
        return torch.cat([sample.gt_label for sample in data_samples])

    def loss(self, feats: Tuple[Tensor, ...], data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """``loss`` (main) plus ``loss_aux_<stage>`` = ``aux_loss_weight * loss(aux)``."""
        losses = self._get_loss(self(feats), data_samples, **kwargs)
        if self.has_aux:
            target = self._targets(data_samples)
            for name, logits in self.forward_aux(feats).items():
                aux = self.loss_module(logits, target, avg_factor=logits.size(0), **kwargs)
                losses[f'loss_aux_{name[:-len("_aux")]}'] = self.aux_loss_weight * aux
        return losses

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Delete the auxiliary classifiers (idempotent); ``linear`` is kept unchanged."""
        for name in AUX_NAMES:
            if hasattr(self, name):
                delattr(self, name)
        self.deploy = True

    def after_reparameterize(self) -> None:
        """Called by :func:`rep_mm.reparameterize` on containers: drop the training-only parts."""
        self.switch_to_deploy()
