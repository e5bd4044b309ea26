"""What a loaded checkpoint holds: its state dict (unwrapped) and its form tag.

Every checkpoint rep_mm writes records the form of the weights it holds in its ``meta``::

    {'state_dict': {...}, 'meta': {'rep_mm_form': 'deploy', ...}}   # or 'training'

(:data:`FORM_KEY`). :func:`form_tag` reads it back; the form-aware loader
(:func:`rep_mm.io.load_into`) trusts it and checks it against the keys.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Mapping, MutableMapping, Optional

from torch import Tensor

from .errors import CheckpointError

__all__ = ['WRAPPER_KEYS', 'FORMS', 'FORM_KEY', 'extract_state_dict', 'checkpoint_meta',
           'form_tag', 'tag_form']

WRAPPER_KEYS = ('state_dict', 'model', 'module')
FORMS = ('training', 'deploy')
FORM_KEY = 'rep_mm_form'


def extract_state_dict(obj: Any) -> 'OrderedDict[str, Tensor]':
    """The state dict inside a loaded checkpoint, with a DDP ``module.`` prefix removed.

    Accepts a raw state dict or one wrapped in ``{'state_dict': ...}``, ``{'model': ...}`` or
    ``{'module': ...}`` (also nested).
    """
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'expected a state dict (a dict of tensors, possibly under '
                              f'{list(WRAPPER_KEYS)}), got {type(obj).__name__}')
    if not obj:
        raise CheckpointError('the checkpoint holds an empty state dict')
    bad = [f'{k!r} ({type(v).__name__})' for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f'not a state dict: {len(bad)} entr(y/ies) are not str -> Tensor, '
                              f'e.g. {", ".join(bad[:5])}; top-level keys: {list(obj)[:8]}')
    if all(k.startswith('module.') for k in obj):
        return OrderedDict((k[len('module.'):], v) for k, v in obj.items())
    return OrderedDict(obj)


def checkpoint_meta(obj: Any) -> Dict[str, Any]:
    """The ``meta`` dict of a loaded checkpoint (empty for a bare state dict)."""
    meta = obj.get('meta') if isinstance(obj, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def form_tag(obj: Any) -> Optional[str]:
    """``meta['rep_mm_form']`` of a loaded checkpoint: ``'training'``, ``'deploy'`` or None.

    Raises:
        CheckpointError: the tag is present but is neither form.
    """
    tag = checkpoint_meta(obj).get(FORM_KEY)
    if tag is None:
        return None
    if tag not in FORMS:
        raise CheckpointError(f"the checkpoint's meta[{FORM_KEY!r}] is {tag!r}; it must be one "
                              f"of {FORMS}")
    return tag


def tag_form(meta: MutableMapping[str, Any], form: str) -> MutableMapping[str, Any]:
    """Record ``form`` (``'training'`` / ``'deploy'``) in a checkpoint's ``meta``; returns it."""
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    meta[FORM_KEY] = form
    return meta
