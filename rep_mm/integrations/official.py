"""The official releases' model layout (backbone + pooling + ``linear``) and their loading.

The original RepVGG / RepVGGplus repositories save a whole classifier: the backbone's keys
without prefix plus ``linear.*``. :class:`OfficialClassifier` has exactly that layout around a
rep_mm backbone, so such a file converts without a config (``rep-mm convert --arch``):
:func:`build_arch_model` builds it by arch name, :func:`load_arch_weights` loads a file of
either form into it (backbone strictly, through :func:`rep_mm.io.load_into`, then the
classifier).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..io import CheckpointError, FormLoad, extract_state_dict, load_into, read_checkpoint
from ..io.load import Source

__all__ = ['arch_names', 'OfficialClassifier', 'build_arch_model', 'load_arch_weights']

HEAD_KEYS = (('linear.weight', 'linear.bias'), ('head.fc.weight', 'head.fc.bias'))


def _families() -> Dict[str, type]:
    from ..backbones import RepVGG, RepVGGplus
    return {'RepVGG': RepVGG, 'RepVGGplus': RepVGGplus}


def arch_names() -> List[str]:
    """Every name :func:`build_arch_model` accepts: ``RepVGG-<arch>`` and
    ``RepVGGplus-<arch>``."""
    return [f'{family}-{arch}' for family, cls in _families().items()
            for arch in cls.arch_settings]


class OfficialClassifier(nn.Module):
    """The official classifier layout: backbone, global average pooling, ``linear``.

    ``linear`` is None for backbone-only checkpoints; the output is then the last feature map.
    """

    def __init__(self, backbone: nn.Module, linear: Optional[nn.Linear] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)[-1]
        if self.linear is None:
            return features
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))

    def official_state_dict(self) -> Dict[str, Tensor]:
        """Backbone keys without prefix plus ``linear.*``: the official checkpoint layout."""
        state = dict(self.backbone.state_dict())
        if self.linear is not None:
            state.update({f'linear.{k}': v for k, v in self.linear.state_dict().items()})
        return state


def build_arch_model(name: str, deploy: bool = False) -> OfficialClassifier:
    """An :class:`OfficialClassifier` around ``rep_mm.RepVGG`` / ``RepVGGplus`` by arch name.

    Raises:
        ValueError: ``name`` is not one of :func:`arch_names`.
    """
    family, _, arch = name.partition('-')
    classes = _families()
    if family not in classes or arch not in classes[family].arch_settings:
        raise ValueError(f'unknown arch {name!r}; choose one of {", ".join(arch_names())}')
    return OfficialClassifier(classes[family](arch=arch, deploy=deploy))


def _load_linear(model: OfficialClassifier, state_dict: Dict[str, Tensor],
                 head: Tuple[str, str]) -> str:
    """Put the classifier ``head`` (weight, bias keys) of ``state_dict`` into ``model.linear``."""
    weight = state_dict[head[0]]
    bias = state_dict.get(head[1])
    channels = model.backbone.out_channels[-1]
    if weight.ndim != 2 or weight.shape[1] != channels:
        raise CheckpointError(f'classifier {head[0]} has shape {list(weight.shape)}, expected '
                              f'[num_classes, {channels}] for this arch')
    model.linear = nn.Linear(channels, weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        model.linear.weight.copy_(weight)
        if bias is not None:
            model.linear.bias.copy_(bias)
    model.linear.train(model.training)
    return f'classifier {head[0].rsplit(".", 1)[0]} -> linear ({weight.shape[0]} classes)'


def load_arch_weights(model: OfficialClassifier, checkpoint: Source, kind: str = 'auto',
                      require: Optional[str] = None, convert: bool = True,
                      allow_unsafe: bool = False) -> Tuple[FormLoad, List[str]]:
    """Load an official / mmpretrain file of either form: backbone strictly, then classifier.

    The backbone goes through :func:`rep_mm.io.load_into` (``require`` / ``convert`` as
    there: a deploy-form file converts the backbone first); ``linear.*`` (or ``head.fc.*``)
    becomes ``model.linear``.

    Returns:
        ``(result, notes)``: the backbone's :class:`~rep_mm.io.FormLoad` and lines to print.
    """
    loaded: Any = read_checkpoint(checkpoint, allow_unsafe)
    result = load_into(model.backbone, loaded, kind=kind, target='backbone', require=require,
                       convert=convert)
    state_dict = extract_state_dict(loaded)
    head = next((pair for pair in HEAD_KEYS if pair[0] in state_dict), None)
    result.report.skipped = [k for k in result.report.skipped if head is None or k not in head]
    notes = [result.summary()]
    if head is None:
        notes.append('no classifier (linear.* / head.fc.*) in the checkpoint: backbone only')
    else:
        notes.append(_load_linear(model, state_dict, head))
    return result, notes
