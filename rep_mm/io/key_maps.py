"""Key maps: a checkpoint's names (official / mmpretrain / rep_mm) put under a model's names.

rep_mm keeps the names of the official code (RepVGG: ``stage0..stage4``, ``rbr_dense``,
``rbr_1x1``, ``rbr_identity``, ``rbr_reparam``, ``se.down``/``se.up``, ``post_se``; RepMLPNet:
``conv_embedding``, ``stages``, ``embeds``, ``gp.fc1``, ``prebn1``, ``head_norm``), so an
official release loads as is; mmpretrain's names (RepVGG: ``stem``, ``stage_1``, ``branch_3x3``,
``branch_norm``, ``se_layer.conv1.conv``; RepMLPNet: ``patch_embed``, ``gp.conv1.conv``,
``norm1``, ``downsample_layers``, ``final_norm``) are mapped explicitly. :func:`map_state_dict`
returns the entries under the target module's names and the keys deliberately skipped; which
keys then fit is the loader's business (:mod:`.load`).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

from torch import Tensor, nn

__all__ = ['KINDS', 'TARGETS', 'OFFICIAL_HEAD_PREFIXES', 'MappedState', 'check_kind_target',
           'detect_kind', 'mmpretrain_to_official', 'map_state_dict']

KINDS = ('auto', 'official', 'mmpretrain', 'rep_mm')
TARGETS = ('auto', 'backbone', 'model')
# classifier parts of the official full models; in an mm model they belong to the head
OFFICIAL_HEAD_PREFIXES = ('linear.', 'stage1_aux.', 'stage2_aux.', 'stage3_first_aux.',
                          'head.')  # head.* is RepMLPNet's classifier

# mmpretrain RepVGG (backbone-relative key) -> official name, applied in this order
_MMPRETRAIN_RULES = (
    (re.compile(r'^stem\.'), 'stage0.'),
    (re.compile(r'^stage_(\d+)\.'), r'stage\1.'),
    (re.compile(r'\.branch_3x3\.norm\.'), '.rbr_dense.bn.'),
    (re.compile(r'\.branch_1x1\.norm\.'), '.rbr_1x1.bn.'),
    (re.compile(r'\.branch_3x3\.'), '.rbr_dense.'),
    (re.compile(r'\.branch_1x1\.'), '.rbr_1x1.'),
    (re.compile(r'\.branch_norm\.'), '.rbr_identity.'),
    (re.compile(r'\.branch_reparam\.'), '.rbr_reparam.'),
    (re.compile(r'\.se_layer\.conv1\.conv\.'), '.se.down.'),
    (re.compile(r'\.se_layer\.conv2\.conv\.'), '.se.up.'),
    # mmpretrain RepMLPNet
    (re.compile(r'^patch_embed\.projection\.'), 'conv_embedding.conv.'),
    (re.compile(r'^patch_embed\.norm\.'), 'conv_embedding.bn.'),
    (re.compile(r'\.gp\.conv1\.conv\.'), '.gp.fc1.'),
    (re.compile(r'\.gp\.conv2\.conv\.'), '.gp.fc2.'),
    (re.compile(r'^(stages\.\d+\.\d+)\.norm([12])\.'), r'\1.prebn\2.'),
    (re.compile(r'^downsample_layers\.'), 'embeds.'),
    (re.compile(r'^final_norm\.'), 'head_norm.'),
)
_MMPRETRAIN_MARKERS = re.compile(
    r'^(stem|stage_\d+|patch_embed|downsample_layers|final_norm)\.|'
    r'\.(branch_3x3|branch_1x1|branch_norm|branch_reparam)\.')
_OFFICIAL_TOP = re.compile(r'^(stage\d+|stage3_first|stage3_second|linear|stage1_aux|'
                           r'stage2_aux|stage3_first_aux|conv_embedding|stages|embeds|head_norm|'
                           r'head)\.')


def check_kind_target(kind: str, target: str) -> None:
    """Raise ``ValueError`` for a ``kind`` not in :data:`KINDS` or a ``target`` not in
    :data:`TARGETS`."""
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}')


def detect_kind(state_dict: Mapping[str, Tensor]) -> str:
    """``'mmpretrain'``, ``'official'`` or ``'rep_mm'``: which naming scheme the keys use."""
    keys = list(state_dict)
    backbone_keys = [k[len('backbone.'):] for k in keys if k.startswith('backbone.')]
    if any(_MMPRETRAIN_MARKERS.search(k) for k in backbone_keys or keys):
        return 'mmpretrain'
    if all(_OFFICIAL_TOP.match(k) for k in keys):
        return 'official'
    return 'rep_mm'


def mmpretrain_to_official(key: str) -> str:
    """Map one backbone-relative mmpretrain RepVGG / RepMLPNet key to the official name."""
    for pattern, replacement in _MMPRETRAIN_RULES:
        key = pattern.sub(replacement, key)
    return key


@dataclass
class MappedState:
    """A checkpoint's entries under the names of ``module`` (the model or its backbone)."""

    module: nn.Module
    kind: str
    target: str
    entries: Dict[str, Tensor] = field(default_factory=OrderedDict)
    skipped: List[str] = field(default_factory=list)  # keys not for this target


@dataclass
class _Split:
    backbone: Dict[str, Tensor] = field(default_factory=OrderedDict)  # backbone-relative
    official_head: Dict[str, Tensor] = field(default_factory=OrderedDict)  # linear., *_aux.
    other: Dict[str, Tensor] = field(default_factory=OrderedDict)  # mm-model names (head., neck.)


def _split(state_dict: Mapping[str, Tensor], kind: str) -> _Split:
    parts = _Split()
    if kind == 'official':
        for key, value in state_dict.items():
            target = parts.official_head if key.startswith(OFFICIAL_HEAD_PREFIXES) else \
                parts.backbone
            target[key] = value
        return parts
    prefixed = any(k.startswith('backbone.') for k in state_dict)
    for key, value in state_dict.items():
        if prefixed and not key.startswith('backbone.'):
            parts.other[key] = value
            continue
        key = key[len('backbone.'):] if prefixed else key
        parts.backbone[mmpretrain_to_official(key) if kind == 'mmpretrain' else key] = value
    return parts


def _resolve_target(model: nn.Module, target: str) -> Tuple[nn.Module, str]:
    has_backbone = isinstance(getattr(model, 'backbone', None), nn.Module)
    if target == 'auto':
        target = 'model' if has_backbone else 'backbone'
    if target == 'backbone' and has_backbone:
        return model.backbone, target
    return model, target


def _map_to_model(parts: _Split, target: str, has_backbone: bool,
                  model_keys: List[str]) -> Tuple[Dict[str, Tensor], List[str]]:
    """Checkpoint entries under the target module's names, and the keys deliberately skipped."""
    if target == 'backbone' or not has_backbone:
        skipped = list(parts.official_head) + list(parts.other)
        return OrderedDict(parts.backbone), skipped
    mapped: Dict[str, Tensor] = OrderedDict(('backbone.' + k, v) for k, v in parts.backbone.items())
    names = set(model_keys)
    for key, value in parts.official_head.items():
        if key.startswith(('linear.', 'head.')):
            rest = key.split('.', 1)[1]
            key = 'head.linear.' + rest if 'head.linear.' + rest in names else 'head.fc.' + rest
        else:
            key = 'head.' + key
        mapped[key] = value
    mapped.update(parts.other)
    return mapped, []


def map_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], kind: str = 'auto',
                   target: str = 'auto') -> MappedState:
    """Put ``state_dict`` under the names of ``model`` (``target='model'``) or of its backbone.

    Args:
        model: a rep_mm backbone, or an mm model with a ``backbone``.
        state_dict: a checkpoint's state dict (see :func:`rep_mm.io.extract_state_dict`).
        kind: ``'official'``, ``'mmpretrain'``, ``'rep_mm'`` or ``'auto'`` (detected).
        target: ``'backbone'``, ``'model'`` or ``'auto'`` (``'model'`` when ``model`` has a
            backbone); see :func:`rep_mm.io.load_weights`.

    Raises:
        ValueError: an unknown ``kind`` or ``target``.
    """
    check_kind_target(kind, target)
    kind = detect_kind(state_dict) if kind == 'auto' else kind
    module, target = _resolve_target(model, target)
    has_backbone = isinstance(getattr(module, 'backbone', None), nn.Module)
    entries, skipped = _map_to_model(_split(state_dict, kind), target, has_backbone,
                                     list(module.state_dict()))
    return MappedState(module=module, kind=kind, target=target, entries=entries,
                       skipped=skipped)
