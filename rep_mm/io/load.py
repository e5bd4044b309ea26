"""Loading a checkpoint into a model strictly: :func:`load_weights` and the form-aware
:func:`load_into`.

* :func:`load_weights` loads into the model as it is (no conversion). Keys of the other form
  (a deploy-form checkpoint for a training-form model or the reverse) are an error that says
  so; any other key that does not fit is listed (:class:`LoadReport`).
* :func:`load_into` takes a checkpoint of either form: a deploy-form checkpoint converts the
  model first (:func:`rep_mm.reparameterize`), then loads strictly; the form found is
  reported (:class:`FormLoad`). One rule for every family (:mod:`.forms`).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple, Union

from torch import Tensor, nn

from .errors import CheckpointError, CheckpointFormError, listing
from .forms import ModelKeys, match_form, other_form_message, resolve_form
from .key_maps import MappedState, check_kind_target, map_state_dict
from .safe_load import read_checkpoint
from .state_dict import FORMS, extract_state_dict, form_tag

__all__ = ['Source', 'LoadReport', 'FormLoad', 'load_weights', 'load_into']

MAX_LISTED = 10
Source = Union[str, os.PathLike, Mapping[str, Any]]


@dataclass
class LoadReport:
    """What :func:`load_weights` found: the scheme, and every key that did not fit."""

    kind: str
    target: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(
        default_factory=list)
    skipped: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        lines = [f'{len(self.loaded)} tensor(s) loaded ({self.kind} names -> {self.target})']
        if self.skipped:
            lines.append(f'{len(self.skipped)} key(s) not for this target, skipped: '
                         f'{listing(self.skipped, MAX_LISTED)}')
        for title, keys in (('missing in the checkpoint', self.missing),
                            ('unexpected (not in the model)', self.unexpected)):
            if keys:
                lines.append(f'{len(keys)} key(s) {title}: {listing(keys, MAX_LISTED)}')
        if self.shape_mismatch:
            items = [f'{k}: checkpoint {list(a)} vs model {list(b)}'
                     for k, a, b in self.shape_mismatch]
            lines.append(f'{len(items)} shape mismatch(es): {listing(items, MAX_LISTED)}')
        return '\n  '.join(lines)


@dataclass
class FormLoad:
    """What :func:`load_into` did: the checkpoint's form, its tag, the conversion, the load."""

    form: str                    # 'training' | 'deploy': the checkpoint's form
    tag: Optional[str]           # its meta['rep_mm_form'], None when untagged
    converted: List[str]         # blocks converted before loading (deploy-form checkpoint)
    report: LoadReport

    def summary(self) -> str:
        tagged = ', tagged' if self.tag else ''
        head = f'{self.form}-form checkpoint{tagged}'
        if self.converted:
            head += f'; {len(self.converted)} block(s) of the model converted first'
        return f'{head}: {self.report.summary()}'


def _check_not_other_form(mapped: MappedState) -> None:
    """Raise when the keys are those of the model's other form (nothing is converted)."""
    forms = ModelKeys(mapped.module)
    if forms.form == 'plain':
        return
    form = match_form(mapped.entries, forms)
    if form is not None and form != forms.form:
        raise CheckpointFormError(other_form_message(form, list(mapped.entries), forms),
                                  form, forms.form)


def _load_entries(mapped: MappedState, strict: bool) -> LoadReport:
    """Load the entries that fit ``mapped.module``; with ``strict`` raise on any misfit."""
    module = mapped.module
    expected = module.state_dict()
    provided = mapped.entries
    report = LoadReport(kind=mapped.kind, target=mapped.target, skipped=list(mapped.skipped))
    report.missing = [k for k in expected if k not in provided]
    report.unexpected = [k for k in provided if k not in expected]
    loadable: 'OrderedDict[str, Tensor]' = OrderedDict()
    for key, value in provided.items():
        if key not in expected:
            continue
        if tuple(value.shape) != tuple(expected[key].shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(expected[key].shape)))
        else:
            loadable[key] = value
    if strict and not report.ok:
        raise CheckpointError(f'checkpoint does not fit {type(module).__name__} '
                              f'(strict=True):\n  {report.summary()}')
    module.load_state_dict(loadable, strict=False)
    report.loaded = list(loadable)
    return report


def load_weights(model: nn.Module, source: Source, kind: str = 'auto', strict: bool = True,
                 target: str = 'auto', allow_unsafe: bool = False) -> LoadReport:
    """Load a checkpoint (file or dict) into a rep_mm backbone or a whole mm model, as it is.

    Args:
        model: a rep_mm backbone, or an mm model with a ``backbone`` (classifier, segmentor,
            detector); a model wrapper (DDP) is looked through.
        source: a checkpoint path, a loaded checkpoint or a state dict (any wrapping accepted
            by :func:`~rep_mm.io.extract_state_dict`).
        kind: naming scheme of the checkpoint: ``'official'`` (the original repos' full models,
            ``linear.*`` = classifier), ``'mmpretrain'`` (its RepVGG classifier or backbone),
            ``'rep_mm'`` (a rep_mm model's own state dict), or ``'auto'`` to detect it.
        strict: raise on any missing / unexpected / shape-mismatched key (default); otherwise
            load what fits and return the report.
        target: ``'backbone'`` (``model.backbone`` if the model has one, else ``model``; head
            keys of the checkpoint are skipped), ``'model'`` (the whole mm model: official
            ``linear.*`` goes to ``head.fc.*``, or to ``head.linear.*`` for the RepVGGplus head,
            ``*_aux.*`` to ``head.*_aux.*``) or ``'auto'`` (``'model'`` when there is a
            backbone attribute).
        allow_unsafe: passed to :func:`~rep_mm.io.load_checkpoint_file` for a path ``source``.

    Returns:
        LoadReport: loaded / missing / unexpected / shape-mismatched / skipped keys.

    Raises:
        CheckpointError: unreadable file; with ``strict``, any key that does not fit (up to 10
            of each listed).
        CheckpointFormError: a deploy-form checkpoint for a training-form model or the reverse
            (whatever ``strict``; :func:`load_into` converts the model instead).
    """
    from ..integrations.mm_build import unwrap_model
    check_kind_target(kind, target)
    state_dict = extract_state_dict(read_checkpoint(source, allow_unsafe))
    mapped = map_state_dict(unwrap_model(model), state_dict, kind, target)
    if set(mapped.entries) != set(mapped.module.state_dict()):
        _check_not_other_form(mapped)
    return _load_entries(mapped, strict)


def _telling_keys(form: str, given: List[str], forms: ModelKeys) -> str:
    """The markers of the keys that only the ``form`` checkpoint has (for messages)."""
    other = forms.deploy if form == 'training' else forms.training
    reference = set(other if other is not None else forms.keys)
    return forms.markers(k for k in given if k not in reference)


def _check_wanted(form: str, forms: ModelKeys, given: List[str], require: Optional[str],
                  convert: bool) -> None:
    """Raise when a checkpoint of ``form`` cannot or may not go into the model of ``forms``."""
    if forms.form == 'plain':  # one form only: nothing to convert, nothing to refuse
        return
    if form == 'training' and forms.form == 'deploy':  # a folded model cannot be unfolded
        raise CheckpointFormError(other_form_message(form, given, forms), form, forms.form)
    if require is not None and form != require:
        wanted = ('a deploy-form (converted) checkpoint is needed here: convert it first '
                  '(`rep-mm convert`)' if require == 'deploy' else
                  'a training-form checkpoint is needed here (this one is converted already)')
        raise CheckpointFormError(f'checkpoint is in {form} form '
                                  f'({_telling_keys(form, given, forms)} keys) but {wanted}',
                                  form, forms.form)
    if form == 'deploy' and forms.form == 'training' and not convert:
        raise CheckpointFormError(other_form_message(
            form, given, forms, hint='it is converted already: build the model with '
                                     'deploy=True, or load with convert=True'),
            form, forms.form)


def load_into(model: nn.Module, checkpoint: Source, kind: str = 'auto', target: str = 'auto',
              require: Optional[str] = None, convert: bool = True,
              allow_unsafe: bool = False) -> FormLoad:
    """Load a training-form or a deploy-form checkpoint into a model, converting it if needed.

    The checkpoint's form is found from the model's own keys in both forms
    (:func:`rep_mm.io.checkpoint_form`; a ``meta['rep_mm_form']`` tag is trusted and checked).
    A deploy-form checkpoint for a training-form model converts the target module first
    (:func:`rep_mm.reparameterize`); then every key must fit (strict).

    Example::

        model = build_model(cfg)                  # training form, as the config says
        result = load_into(model, 'converted.pth')
        result.form       # 'deploy': the model was converted, then loaded
        result.summary()  # 'deploy-form checkpoint, tagged; 7 block(s) ... converted first: ...'

    Args:
        model: a rep_mm backbone or an mm model (a model wrapper is looked through).
        checkpoint: a path, a loaded checkpoint or a state dict.
        kind, target: the naming scheme and what the weights are for, as in
            :func:`load_weights`.
        require: ``'training'`` or ``'deploy'``: refuse a checkpoint in the other form (a
            model without re-parameterizable blocks has one form only and takes either).
        convert: convert a training-form model for a deploy-form checkpoint (default);
            with False that is an error (the model is never changed).
        allow_unsafe: for a path: unpickle fully (``weights_only=False``), trusted files only.

    Raises:
        CheckpointFormError: the keys fit neither form of the model (the differences are
            listed), contradict the tag, are not in the ``require``-d form, are in deploy form
            with ``convert=False``, or are in training form while the model is in deploy form
            (a folded model cannot be unfolded).
        CheckpointError: an unreadable file; keys of the right form whose shapes do not fit.
    """
    from ..integrations.mm_build import unwrap_model
    from ..reparam import reparameterize
    check_kind_target(kind, target)
    if require not in (None,) + FORMS:
        raise ValueError(f'require must be None or one of {FORMS}, got {require!r}')
    loaded = read_checkpoint(checkpoint, allow_unsafe)
    tag = form_tag(loaded)
    mapped = map_state_dict(unwrap_model(model), extract_state_dict(loaded), kind, target)
    forms = ModelKeys(mapped.module)
    given = list(mapped.entries)
    form = resolve_form(given, forms, tag)
    _check_wanted(form, forms, given, require, convert)
    converted: List[str] = []
    if form == 'deploy' and forms.form == 'training':
        converted = reparameterize(mapped.module).converted
    return FormLoad(form=form, tag=tag, converted=converted, report=_load_entries(mapped, True))
