"""Comparing two outputs of one model: errors that cannot say PASS on NaN, Inf or overflow.

The one place where rep_mm measures ``max |a - b|`` and ``max |a - b| / max |a|`` between a
*reference* (the training-form model, or PyTorch for an export) and a *candidate* (the
converted model, the ONNX graph). :func:`rep_mm.reparameterize`, the ``ReparameterizeHook``
and the export checks (:mod:`rep_mm.deploy.onnx_checks`, :mod:`rep_mm.deploy.checks`) all use it.

Inputs are sequences of tensors (``torch.Tensor`` of any device / float dtype, ``numpy``
arrays or Python numbers), paired by position: the flattened outputs of one model. Every pair
is compared in float64 (exact for fp16 / bf16 / fp32 values).

The rules:

* **Non-finite values are findings, never skipped.** For every tensor and every kind (NaN,
  +inf, -inf) the positions where the reference and the candidate hold it are compared:

  - ``side='candidate'``: the candidate holds the value where the reference does not
    (e.g. a fused fp16 kernel that overflowed, NaN in a converted output);
  - ``side='reference'``: the reference holds it where the candidate does not;
  - ``side='both'``: both hold the same non-finite value at the same place (NaN and NaN,
    +inf and +inf). The outputs agree there, but the reference itself is not finite: a
    model whose training-form output is NaN or infinite computes nothing that can be
    verified, so this is **not a pass** either; the message says that the reference is
    non-finite rather than that the conversion is wrong.

  Each finding names the tensor (index in the flattened output, and its shape), how many
  values, and the first index. Any finding makes :attr:`Comparison.passed` False, and the
  headline ``max_abs`` / ``max_rel`` NaN (undefined), so that any caller that only tests
  ``max_rel <= tolerance`` fails too; the errors over the positions where both outputs are
  finite stay available as ``finite_max_abs`` / ``finite_max_rel``.
* **Relative error** is ``max |a - b| / max |a|`` over the finite positions. When the
  reference is all zeros it is 0 if the candidate is all zeros too (identical outputs) and
  +inf otherwise; both cases leave a note. A difference that overflows float64 gives
  ``max_abs = inf``, which fails every tolerance.
* **Empty outputs** (no value at all) verify nothing: not passed, unless ``allow_empty``
  (e.g. detections after NMS when the raw head outputs are compared separately).
* Different numbers of tensors, or different shapes, raise ``ValueError``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['NonFinite', 'Comparison', 'compare', 'as_float64', 'nonfinite_summary']

# (kind, test) of the non-finite values, in report order
_KINDS = (('NaN', np.isnan), ('+inf', np.isposinf), ('-inf', np.isneginf))
_SIDES = ('candidate', 'reference', 'both')


def as_float64(value: Any) -> np.ndarray:
    """``value`` (a ``torch.Tensor`` on any device and of any real dtype, including bf16, a
    numpy array or a number) as a float64 numpy array of the same shape."""
    if hasattr(value, 'detach') and hasattr(value, 'cpu'):  # torch.Tensor, without importing torch
        import torch
        if value.is_complex():
            raise TypeError('complex outputs cannot be compared')
        return value.detach().to(device='cpu', dtype=torch.float64).numpy()
    array = np.asarray(value)
    if np.iscomplexobj(array):
        raise TypeError('complex outputs cannot be compared')
    return array.astype(np.float64, copy=False)


@dataclass(frozen=True)
class NonFinite:
    """Non-finite values of one kind in one tensor of the flattened output.

    Attributes:
        tensor: index of the tensor in the flattened output.
        shape: its shape.
        kind: ``'NaN'``, ``'+inf'`` or ``'-inf'``.
        side: ``'candidate'`` (only the candidate holds ``kind`` at these places),
            ``'reference'`` (only the reference) or ``'both'`` (the same value in both).
        count: how many values.
        first_index: index (within the tensor) of the first of them, row-major order.
        name: the tensor's name when the caller gave names (e.g. ONNX output names).
    """

    tensor: int
    shape: Tuple[int, ...]
    kind: str
    side: str
    count: int
    first_index: Tuple[int, ...]
    name: Optional[str] = None

    @property
    def mismatch(self) -> bool:
        """True when the two outputs differ at these places (``side != 'both'``)."""
        return self.side != 'both'

    def describe(self) -> str:
        label = f'tensor {self.tensor}' + (f' ({self.name})' if self.name else '')
        where = {'candidate': 'in the candidate only (the reference differs there)',
                 'reference': 'in the reference only (the candidate differs there)',
                 'both': 'in both outputs at the same places'}[self.side]
        return (f'{label} of shape {list(self.shape)}: {self.count} {self.kind} {where}, '
                f'first at index {list(self.first_index)}')

    def to_dict(self) -> Dict[str, Any]:
        return dict(tensor=self.tensor, name=self.name, shape=list(self.shape), kind=self.kind,
                    side=self.side, count=self.count, first_index=list(self.first_index))


def nonfinite_summary(findings: Sequence[NonFinite], limit: int = 3) -> str:
    """One line naming the first ``limit`` findings (and how many more there are)."""
    text = '; '.join(f.describe() for f in findings[:limit])
    if len(findings) > limit:
        text += f'; and {len(findings) - limit} more'
    return text


def _json_float(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        max_abs: ``max |a - b|`` over all values; NaN when anything non-finite was found.
        max_rel: ``max_abs / max |a|``; NaN when anything non-finite was found, +inf when
            the reference is all zeros and the candidate is not.
        finite_max_abs, finite_max_rel: the same over the positions where both outputs are
            finite (``max |a|`` over the finite reference values); informational.
        max_reference: ``max |a|`` over the finite reference values.
        tensors, elements: how many tensors / values were paired.
        nonfinite: every :class:`NonFinite` finding, by tensor, kind and side.
        notes: remarks that are not failures on their own (all-zero reference ...).
        tolerance: the relative tolerance of :attr:`passed` (None: not judged).
        allow_empty: whether comparing no value at all may pass.
    """

    max_abs: float
    max_rel: float
    finite_max_abs: float
    finite_max_rel: float
    max_reference: float
    tensors: int
    elements: int
    nonfinite: Tuple[NonFinite, ...] = ()
    notes: Tuple[str, ...] = ()
    tolerance: Optional[float] = None
    allow_empty: bool = False

    @property
    def finite(self) -> bool:
        """No NaN or infinity anywhere in either output."""
        return not self.nonfinite

    @property
    def reference_finite(self) -> bool:
        """No NaN or infinity in the reference (its findings have ``side`` reference / both)."""
        return not any(f.side in ('reference', 'both') for f in self.nonfinite)

    def failures(self, tolerance: Optional[float] = None) -> List[str]:
        """Why this comparison does not pass at ``tolerance`` (default :attr:`tolerance`);
        empty when it passes. Non-finite findings and empty outputs fail at any tolerance."""
        tolerance = self.tolerance if tolerance is None else tolerance
        reasons = []
        mismatched = [f for f in self.nonfinite if f.mismatch]
        matched = [f for f in self.nonfinite if not f.mismatch]
        if mismatched:
            reasons.append(f'non-finite values that the other output does not have: '
                           f'{nonfinite_summary(mismatched)}')
        if matched:
            reasons.append(f'the reference output itself is not finite (a model that already '
                           f'computes NaN / inf cannot be verified): '
                           f'{nonfinite_summary(matched)}')
        if self.elements == 0 and not self.allow_empty:
            reasons.append('nothing compared: every output tensor is empty')
        if self.finite and not math.isfinite(self.max_rel):
            reasons.append(f'max rel error {self.max_rel:.3g} '
                           f'(max abs error {self.max_abs:.3g}, max |reference| '
                           f'{self.max_reference:.3g})')
        elif self.finite and tolerance is not None and not self.max_rel <= tolerance:
            reasons.append(f'max rel error {self.max_rel:.3g} > tolerance {tolerance:g}')
        return reasons

    def passed_at(self, tolerance: float) -> bool:
        """True only when everything is finite, something was compared (or ``allow_empty``)
        and ``max_rel <= tolerance``."""
        return not self.failures(tolerance)

    @property
    def passed(self) -> Optional[bool]:
        """:meth:`passed_at` the stored tolerance; None when no tolerance was given and the
        comparison has no tolerance-independent failure."""
        if self.tolerance is None:
            return False if self.failures() else None
        return self.passed_at(self.tolerance)

    def summary(self, tolerance: Optional[float] = None, verdict: bool = True) -> str:
        """``max abs error ..., max rel error ...`` and the verdict with its reasons
        (``verdict=False``: the reasons of a failure only, never ``PASS``)."""
        tolerance = self.tolerance if tolerance is None else tolerance
        text = f'max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}'
        if not self.finite:
            text += (f' (where both are finite: max abs {self.finite_max_abs:.3g}, '
                     f'max rel {self.finite_max_rel:.3g})')
        reasons = self.failures(tolerance)
        if reasons:
            text += ' -- FAIL: ' + '; '.join(reasons)
        elif tolerance is not None and verdict:
            text += f' (PASS at {tolerance:g})'
        if self.notes:
            text += ' [' + '; '.join(self.notes) + ']'
        return text

    def to_dict(self, json_safe: bool = True) -> Dict[str, Any]:
        """The numbers, findings (as dicts), notes and :meth:`failures` (at any tolerance).

        ``json_safe``: NaN / inf numbers become None (strict JSON has neither); otherwise
        they stay floats, so that ``f'{max_rel:.3g}'`` prints ``nan``."""
        number = _json_float if json_safe else float
        return dict(max_abs=number(self.max_abs), max_rel=number(self.max_rel),
                    finite_max_abs=number(self.finite_max_abs),
                    finite_max_rel=number(self.finite_max_rel),
                    max_reference=number(self.max_reference), tensors=self.tensors,
                    elements=self.elements, finite=self.finite,
                    reference_finite=self.reference_finite,
                    nonfinite=[f.to_dict() for f in self.nonfinite], notes=list(self.notes),
                    failures=self.failures())


def _findings(index: int, a: np.ndarray, b: np.ndarray,
              name: Optional[str]) -> List[NonFinite]:
    found = []
    for kind, test in _KINDS:
        in_a, in_b = test(a), test(b)
        masks = dict(candidate=in_b & ~in_a, reference=in_a & ~in_b, both=in_a & in_b)
        for side in _SIDES:
            mask = masks[side]
            if mask.any():
                first = np.unravel_index(int(np.argmax(mask.reshape(-1))), a.shape)
                found.append(NonFinite(index, tuple(a.shape), kind, side, int(mask.sum()),
                                       tuple(int(i) for i in first), name))
    return found


def compare(reference: Sequence[Any], candidate: Sequence[Any],
            tolerance: Optional[float] = None, names: Optional[Sequence[str]] = None,
            allow_empty: bool = False) -> Comparison:
    """Compare paired tensors of two flattened outputs (rules in the module docstring).

    Args:
        reference: the tensors of the reference output (training form / PyTorch), or one
            tensor.
        candidate: the tensors of the candidate output, same number and shapes.
        tolerance: relative tolerance for :attr:`Comparison.passed` (None: not judged,
            but non-finite findings still fail).
        names: optional names of the tensors, used in the messages.
        allow_empty: let outputs without any value pass (default: not passed).

    Returns:
        Comparison: errors, the non-finite findings and the verdict.

    Raises:
        ValueError: different numbers of tensors, or shapes that differ.
    """
    if not isinstance(reference, (list, tuple)):
        reference = [reference]
    if not isinstance(candidate, (list, tuple)):
        candidate = [candidate]
    if len(reference) != len(candidate):
        raise ValueError(f'outputs do not match in structure: {len(reference)} reference vs '
                         f'{len(candidate)} candidate tensors')
    if names is not None and len(names) != len(reference):
        raise ValueError(f'{len(names)} names for {len(reference)} tensors')
    finite_abs, max_ref, elements = 0.0, 0.0, 0
    findings: List[NonFinite] = []
    notes: List[str] = []
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        a, b = as_float64(ref), as_float64(cand)
        if a.shape != b.shape:
            raise ValueError(f'output shapes differ at tensor {index}: reference '
                             f'{list(a.shape)} vs candidate {list(b.shape)}')
        elements += a.size
        if not a.size:
            continue
        finite_a, finite_b = np.isfinite(a), np.isfinite(b)
        if not (finite_a.all() and finite_b.all()):
            findings.extend(_findings(index, a, b, None if names is None else names[index]))
        both = finite_a & finite_b
        with np.errstate(over='ignore', invalid='ignore'):
            if both.any():
                finite_abs = max(finite_abs, float(np.max(np.abs(a[both] - b[both]))))
            if finite_a.any():
                max_ref = max(max_ref, float(np.max(np.abs(a[finite_a]))))
    if math.isinf(finite_abs):
        notes.append('the difference of two finite values overflows float64')
    if max_ref > 0:
        finite_rel = finite_abs / max_ref
    elif finite_abs == 0:
        finite_rel = 0.0
        if elements and not findings:
            notes.append('the reference is all zeros and the candidate equals it: relative '
                         'error taken as 0')
    else:
        finite_rel = math.inf
        notes.append('the reference is all zeros but the candidate is not: relative error '
                     'is infinite')
    if elements == 0:
        notes.append('no values to compare')
    if findings:
        max_abs = max_rel = math.nan
    else:
        max_abs, max_rel = finite_abs, finite_rel
    return Comparison(max_abs=max_abs, max_rel=max_rel, finite_max_abs=finite_abs,
                      finite_max_rel=finite_rel, max_reference=max_ref,
                      tensors=len(reference), elements=elements, nonfinite=tuple(findings),
                      notes=tuple(notes), tolerance=tolerance, allow_empty=allow_empty)
