"""Training form or deploy form: of a model, and of a checkpoint for that model.

One rule for every family (RepVGG, RepVGGplus, RepMLPNet, RepGhostNet, RepOpt, OREPA, ACB /
DBB / OREPA ResNets, foreign blocks with a conversion method), decided from the model itself,
never from family-specific key names:

* a model's form (:func:`model_form`) is that of its outermost re-parameterizable blocks
  (:func:`reparam_blocks`): ``'training'`` while any of them has its branches, ``'deploy'``
  when all are folded, ``'plain'`` without such blocks (both forms are then the same);
* a checkpoint's form (:func:`checkpoint_form`) is the form of the model whose keys it has: the
  model's own keys in its current form, and for a training-form model the keys of a converted
  deep copy (:class:`ModelKeys`). A deploy-form model cannot be unfolded; a checkpoint is taken
  for its training form when every key that differs lies inside the model's re-parameterizable
  blocks / containers and every block lacks one of its fused keys.

A ``meta['rep_mm_form']`` tag (:func:`rep_mm.io.form_tag`) is trusted as the expected form and
checked against the keys: a wrong tag is an error that says so.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Iterable, List, MutableMapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..reparam import is_reparam_module
from .errors import CheckpointFormError, listing
from .key_maps import map_state_dict
from .state_dict import FORM_KEY, extract_state_dict, form_tag, tag_form

__all__ = ['MODEL_FORMS', 'reparam_blocks', 'model_form', 'record_form', 'ModelKeys',
           'match_form', 'resolve_form', 'checkpoint_form', 'other_form_message']

MODEL_FORMS = ('training', 'deploy', 'plain')
MAX_SHOWN = 5  # keys listed per kind of difference
MAX_MARKERS = 4


def _inside(key: str, prefix: str) -> bool:
    return prefix == '' or key.startswith(prefix + '.')


def reparam_blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of the outermost re-parameterizable blocks of ``model``.

    Blocks are rep_mm's :class:`~rep_mm.ReparamBlock` and foreign modules with a conversion
    method (:func:`rep_mm.reparam.is_reparam_module`); containers that only convert their
    children (``is_reparam_container``: backbones, heads, deployable mm models) are not blocks.
    The root itself counts when it is a block (``name`` ``''``).
    """
    found: List[Tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if getattr(module, 'is_reparam_container', False) or not is_reparam_module(module):
            continue
        if any(_inside(name, outer) and name != outer for outer, _ in found):
            continue
        found.append((name, module))
        if name == '':
            break
    return found


def _deployed(module: nn.Module) -> bool:
    return bool(getattr(module, 'deploy', False) or getattr(module, 'inference_mode', False))


def _form_of(blocks: Sequence[Tuple[str, nn.Module]]) -> str:
    if not blocks:
        return 'plain'
    return 'deploy' if all(_deployed(module) for _, module in blocks) else 'training'


def model_form(model: nn.Module) -> str:
    """``'training'``, ``'deploy'`` or ``'plain'`` (no re-parameterizable block) for ``model``
    (a model wrapper such as DDP is looked through)."""
    from ..integrations.mm_build import unwrap_model
    return _form_of(reparam_blocks(unwrap_model(model)))


def record_form(checkpoint: MutableMapping[str, Any], model: nn.Module) -> Optional[str]:
    """Tag a checkpoint about to be saved with the form of ``model`` (its weights):
    ``checkpoint['meta']['rep_mm_form']``; a plain model (one form only) is not tagged.
    Returns the form recorded, or None."""
    form = model_form(model)
    if form == 'plain':
        return None
    tag_form(checkpoint.setdefault('meta', {}), form)
    return form


@torch.no_grad()
def _neutral_values(model: nn.Module) -> None:
    """Finite placeholder values (zeros, unit BN variance): the keys of a conversion do not
    depend on the values, but the conversion refuses NaN / inf."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            tensor.zero_()
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.running_var is not None:
            module.running_var.fill_(1.0)


def converted_keys(model: nn.Module) -> List[str]:
    """The state-dict keys ``model`` has after :func:`rep_mm.reparameterize` (on a deep copy;
    ``model`` is not changed). Uninitialised (meta-device) or non-finite values are replaced
    by neutral ones in the copy first."""
    from ..reparam import ReparamError, reparameterize
    clone = copy.deepcopy(model)
    if any(t.is_meta for t in itertools.chain(clone.parameters(), clone.buffers())):
        clone = clone.to_empty(device='cpu')
        _neutral_values(clone)
    try:
        reparameterize(clone)
    except ReparamError:
        _neutral_values(clone)
        reparameterize(clone)
    return list(clone.state_dict())


class ModelKeys:
    """The state-dict keys of a model in its training and deploy forms.

    ``training`` / ``deploy`` are the key lists of each form; the one the model is not in is
    computed on first use (deploy: a converted deep copy, :func:`converted_keys`) and None
    when it cannot be known (the training form of a deploy-form model).
    """

    def __init__(self, model: nn.Module) -> None:
        from ..integrations.mm_build import unwrap_model
        self.model = unwrap_model(model)
        self.name = type(self.model).__name__
        self.keys = list(self.model.state_dict())
        blocks = reparam_blocks(self.model)
        self.blocks = [name for name, _ in blocks]
        self.containers = [name for name, m in self.model.named_modules()
                           if name and getattr(m, 'is_reparam_container', False)]
        self.form = _form_of(blocks)
        self._deploy: Optional[List[str]] = None

    @property
    def training(self) -> Optional[List[str]]:
        """The keys of the training form; None for a deploy-form model (cannot be known)."""
        return None if self.form == 'deploy' else self.keys

    @property
    def deploy(self) -> List[str]:
        """The keys of the deploy form (a converted deep copy of a training-form model)."""
        if self.form != 'training':
            return self.keys
        if self._deploy is None:
            self._deploy = converted_keys(self.model)
        return self._deploy

    def region(self, key: str) -> Optional[str]:
        """The block holding ``key``, else the innermost container holding it, else None."""
        block = next((b for b in self.blocks if _inside(key, b)), None)
        if block is not None:
            return block
        containers = [c for c in self.containers if _inside(key, c)]
        return max(containers, key=len) if containers else None

    def markers(self, keys: Iterable[str]) -> str:
        """The distinct names right below their block (``rbr_reparam``; ``rbr_dense / rbr_1x1``)
        of ``keys``: what tells one form from the other, for messages."""
        seen: List[str] = []
        for key in keys:
            region = self.region(key)
            rest = key[len(region) + 1:] if region else key
            marker = rest.split('.', 1)[0]
            if marker not in seen:
                seen.append(marker)
        shown = ' / '.join(seen[:MAX_MARKERS])
        return shown + (' / ...' if len(seen) > MAX_MARKERS else '') if seen else 'no'


def _looks_like_training(given: Sequence[str], forms: ModelKeys) -> bool:
    """For a deploy-form model: do the keys that differ lie inside its blocks (or containers,
    e.g. a head's auxiliary classifiers), with every block lacking one of its fused keys?"""
    own, keys = set(forms.keys), set(given)
    missing, unexpected = own - keys, keys - own
    if not missing or not unexpected:
        return False
    if any(forms.region(k) is None for k in missing | unexpected):
        return False
    for block in forms.blocks:
        block_keys = [k for k in forms.keys if _inside(k, block)]
        if block_keys and not any(k in missing for k in block_keys):
            return False
    return True


def match_form(keys: Iterable[str], forms: ModelKeys) -> Optional[str]:
    """``'training'`` / ``'deploy'``: the form of the model whose keys ``keys`` are; None when
    they fit neither. A plain model's keys count as ``'training'``."""
    given = list(keys)
    if set(given) == set(forms.keys):
        return 'training' if forms.form == 'plain' else forms.form
    if forms.form == 'training':
        return 'deploy' if set(given) == set(forms.deploy) else None
    if forms.form == 'deploy':
        return 'training' if _looks_like_training(given, forms) else None
    return None


def _differences(given: Sequence[str], expected: Sequence[str]) -> str:
    present, wanted = set(given), set(expected)
    missing = [k for k in expected if k not in present]
    unexpected = [k for k in given if k not in wanted]
    parts = [f'{len(missing)} missing ({listing(missing, MAX_SHOWN)})' if missing
             else '0 missing',
             f'{len(unexpected)} unexpected ({listing(unexpected, MAX_SHOWN)})' if unexpected
             else '0 unexpected']
    return ', '.join(parts)


def neither_message(given: Sequence[str], forms: ModelKeys, tag: Optional[str] = None) -> str:
    """Why the keys ``given`` fit no form of the model: the differences against each form."""
    note = f" (its meta[{FORM_KEY!r}] says {tag!r})" if tag else ''
    if forms.form == 'plain':
        return (f'checkpoint{note} does not fit {forms.name} (a model without '
                f're-parameterizable blocks, so with one form only): '
                f'{_differences(given, forms.keys)}')
    if forms.form == 'deploy':
        return (f'checkpoint{note} fits neither the deploy form of {forms.name} (the model is in '
                f'deploy form) nor its training form: against the deploy form, '
                f'{_differences(given, forms.keys)}; the differences are not confined to the '
                f'model\'s re-parameterizable blocks')
    return (f'checkpoint{note} fits neither the training form nor the deploy form of '
            f'{forms.name}: against the training form, {_differences(given, forms.keys)}; '
            f'against the deploy form, {_differences(given, forms.deploy)}')


def other_form_message(form: str, given: Sequence[str], forms: ModelKeys,
                       hint: Optional[str] = None) -> str:
    """A checkpoint in ``form`` for a model in the other form: the telling keys of both, and
    what to do (``hint``, or the default advice)."""
    own, keys = set(forms.keys), set(given)
    ckpt = forms.markers(k for k in given if k not in own)
    model = forms.markers(k for k in forms.keys if k not in keys)
    if form == 'deploy':
        advice = hint or ('build it with deploy=True or convert the model first '
                          '(rep_mm.reparameterize); rep_mm.io.load_into does the conversion '
                          'itself')
        return (f'checkpoint is in deploy form ({ckpt} keys) but the model is in training form '
                f'({model}): {advice}')
    advice = hint or ('build it with deploy=False, load, then convert (rep_mm.reparameterize or '
                      '`rep-mm convert`)')
    return (f'checkpoint is in training form ({ckpt} keys) but the model is in deploy form '
            f'({model}): {advice}')


def resolve_form(keys: Iterable[str], forms: ModelKeys, tag: Optional[str] = None) -> str:
    """The form of a checkpoint with ``keys`` (in the model's names) for the model of ``forms``.

    ``tag`` (``meta['rep_mm_form']``) is the form the checkpoint says it is in: it must agree
    with the keys (a plain model's keys fit both forms, so its tag is taken as is).

    Raises:
        CheckpointFormError: the keys fit neither form (the differences are listed), or they
            fit the form other than ``tag``.
    """
    given = list(keys)
    form = match_form(given, forms)
    if form is None:
        raise CheckpointFormError(neither_message(given, forms, tag), None, forms.form)
    if forms.form == 'plain':
        return tag or form
    if tag is not None and tag != form:
        differing = [k for k in given if k not in set(forms.keys)] or \
            [k for k in forms.keys if k not in set(given)]
        shown = f' ({forms.markers(differing)} keys)' if differing else ''
        raise CheckpointFormError(
            f"checkpoint's meta[{FORM_KEY!r}] says {tag!r} but its keys are those of the {form} "
            f"form of {forms.name}{shown}: the tag is wrong; re-save the checkpoint with "
            f"meta[{FORM_KEY!r}] = {form!r} (rep_mm.io.tag_form)", form, forms.form)
    return form


def checkpoint_form(checkpoint: Any, model: nn.Module, kind: str = 'auto',
                    target: str = 'auto') -> str:
    """``'training'`` or ``'deploy'``: the form of ``checkpoint``'s weights for ``model``.

    Args:
        checkpoint: a loaded checkpoint or a state dict (any wrapping of
            :func:`rep_mm.io.extract_state_dict`); a ``meta['rep_mm_form']`` tag is checked.
        model: the model (any form; a model wrapper is looked through).
        kind, target: the checkpoint's naming scheme and what it is for, as in
            :func:`rep_mm.io.load_weights`.

    Raises:
        CheckpointFormError: the keys fit neither form, or contradict the tag.
        CheckpointError: not a state dict.
    """
    from ..integrations.mm_build import unwrap_model
    tag = form_tag(checkpoint)
    mapped = map_state_dict(unwrap_model(model), extract_state_dict(checkpoint), kind, target)
    return resolve_form(mapped.entries, ModelKeys(mapped.module), tag)

