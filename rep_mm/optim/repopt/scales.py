"""Read RepOptimizer scales files and match them to a model's scales BY NAME.

A scales file is a plain ``{name: 1-D tensor}`` dict: the released ``RepOpt-VGG-*-scales.pth``
(``stage0.scale_{1x1,conv}.weight``, ``stageK.i.scale_{1x1,conv,identity}.weight``),
``RepOptGhostNet_0_5x_scales.pth`` (``blocks.i.j.ghost{1,2}.fusion_scale.weight``,
``...cheap_operation.1.weight``) or one extracted from a Hyper-Search checkpoint
(:func:`extract_scales`). Key order differs between files, so nothing here relies on order.
"""
import os
from collections import OrderedDict
from typing import Any, Dict, Mapping, Union

import torch
from torch import Tensor

__all__ = ['ScalesError', 'check_scale_values', 'load_scales', 'match_scales', 'extract_scales',
           'is_scale_key']

ScalesSource = Union[str, os.PathLike, Mapping[str, Tensor]]
_WRAPPERS = ('state_dict', 'model', 'module')
_PREFIXES = ('module.', 'backbone.')
MAX_LISTED = 8


class ScalesError(ValueError):
    """A scales file that does not fit the model (missing, extra or mis-shaped keys)."""


def is_scale_key(key: str) -> bool:
    """True for the names of searched scales in an hs model / checkpoint."""
    return key.endswith('.weight') and ('scale' in key.split('.')[-2]
                                        or key.endswith('cheap_operation.1.weight'))


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _unwrap(obj: Any, source: str) -> Dict[str, Tensor]:
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ScalesError(f'{source} is not a dict of tensors (name -> per-channel scale)')
    return OrderedDict((_strip(str(k)), v) for k, v in obj.items())


def check_scale_values(scales: Mapping[str, Tensor], source: str) -> None:
    """Every scale is a floating-point tensor of finite, non-zero values.

    NaN / Inf would poison the re-initialisation and every update through the grad mults; a
    zero scale makes its branch's grad multiplier 0 (those taps never train) and its
    re-initialised contribution 0. Negative values are allowed: the searched scales are trained
    freely, and both ``s * W`` and the multiplier ``s^p`` stay well defined.
    """
    bad = []
    for key, value in scales.items():
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise ScalesError(f'{source}: scale {key!r} has dtype {value.dtype}; scales are '
                              f'real numbers (float tensors)')
        value = value.detach().float()
        if value.numel() == 0:
            bad.append(f'{key}: empty')
            continue
        nonfinite = int((~torch.isfinite(value)).sum())
        zeros = int((value == 0).sum())
        if nonfinite:
            bad.append(f'{key}: {nonfinite} NaN/Inf')
        if zeros:
            bad.append(f'{key}: {zeros} zero(s)')
    if bad:
        listing = '; '.join(bad[:MAX_LISTED]) + (f' ... (+{len(bad) - MAX_LISTED} more)'
                                                   if len(bad) > MAX_LISTED else '')
        raise ScalesError(f'{source} holds scales that cannot be used ({listing}): every value '
                          f'must be finite and non-zero (NaN/Inf poison every update, a zero '
                          f'scale freezes its branch); re-extract them from a healthy '
                          f'Hyper-Search checkpoint')


def load_scales(source: ScalesSource, allow_unsafe: bool = False) -> 'OrderedDict[str, Tensor]':
    """Read a scales file or take a dict; strip ``module.`` / ``backbone.`` prefixes and
    ``state_dict`` / ``model`` wrappers.

    Files go through :func:`rep_mm.io.load_checkpoint_file`: ``weights_only=True``
    (plus the Runner allow-list) unless ``allow_unsafe``; a truncated, corrupted or unsafe file
    raises ``CheckpointError`` naming the file and the problem.
    """
    if isinstance(source, Mapping):
        scales = _unwrap(source, 'the scales dict')
        check_scale_values(scales, 'the scales dict')
        return scales
    from ...io import load_checkpoint_file
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ScalesError(f'scales file {path!r} does not exist (the released ones are '
                          f'RepOpt-VGG-{{B1,B2,L1,L2}}-scales.pth and '
                          f'RepOptGhostNet_0_5x_scales.pth)')
    scales = _unwrap(load_checkpoint_file(path, allow_unsafe=allow_unsafe),
                     f'scales file {path!r}')
    check_scale_values(scales, f'scales file {path!r}')
    return scales


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f' ... (+{len(keys) - MAX_LISTED} more)' if len(keys) > MAX_LISTED else ''
    return ', '.join(keys[:MAX_LISTED]) + more


def match_scales(scales: Mapping[str, Tensor],
                 expected: Mapping[str, torch.Size]) -> 'OrderedDict[str, Tensor]':
    """Check ``scales`` against the ``expected`` names and shapes; return them in its order.

    Raises:
        ScalesError: naming every missing key, extra key and shape mismatch.
    """
    scales = {_strip(k): v for k, v in scales.items()}
    missing = [k for k in expected if k not in scales]
    extra = [k for k in scales if k not in expected]
    wrong = [f'{k}: file {tuple(scales[k].shape)} vs model {tuple(expected[k])}'
             for k in expected if k in scales and scales[k].shape != expected[k]]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing key(s): {_listing(missing)}')
        if extra:
            parts.append(f'{len(extra)} unexpected key(s): {_listing(extra)}')
        if wrong:
            parts.append(f'{len(wrong)} shape mismatch(es): {"; ".join(wrong[:MAX_LISTED])}')
        raise ScalesError('the scales do not fit this model (is it the arch the scales were '
                          'searched for?): ' + ' | '.join(parts))
    return OrderedDict((k, scales[k]) for k in expected)


def extract_scales(hs_checkpoint: ScalesSource,
                   allow_unsafe: bool = False) -> 'OrderedDict[str, Tensor]':
    """The scales of a Hyper-Search model / checkpoint (state_dict or Runner checkpoint);
    files load with ``weights_only=True`` unless ``allow_unsafe`` (trusted files only)."""
    if isinstance(hs_checkpoint, Mapping):
        state = hs_checkpoint
    else:
        from ...io import load_checkpoint_file
        state = load_checkpoint_file(hs_checkpoint, allow_unsafe=allow_unsafe)
    state = _unwrap({k: v for k, v in _unwrap_any(state).items() if isinstance(v, Tensor)},
                    'the Hyper-Search checkpoint')
    scales = OrderedDict((k, v.detach().clone().float()) for k, v in state.items()
                         if is_scale_key(k))
    if not scales:
        raise ScalesError('no scale found in the checkpoint: is it a Hyper-Search (mode="hs") '
                          'model? Expected keys like stage1.0.scale_conv.weight')
    source = ('the Hyper-Search checkpoint' if isinstance(hs_checkpoint, Mapping)
              else f'Hyper-Search checkpoint {os.fspath(hs_checkpoint)!r}')
    check_scale_values(scales, source)
    return scales


def _unwrap_any(obj: Any) -> Mapping:
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    return obj
