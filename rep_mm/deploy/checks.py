"""Judging an export: ONNX outputs vs PyTorch (via :mod:`rep_mm.deploy.onnx_checks`) and the
verdict.

Errors are ``max |a - b|`` and ``max |a - b| / max |a|`` over all outputs
(:mod:`rep_mm.verify.compare`: any NaN / inf in an output fails, also where both outputs hold
it); the one held against ``tolerance`` is ONNX vs the training-form model (or vs the converted
model when the checkpoint was already converted). The dynamic-shape checks
(:mod:`rep_mm.deploy.dynamic`) use the same comparison and :func:`comparison_failures`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from torch import Tensor, nn

from .onnx_checks import compare_outputs, compare_pre_nms, rewritten_forward

__all__ = ['compare_all', 'comparison_failures', 'judge']


def compare_all(model: nn.Module, training_form: Optional[nn.Module], deploy_cfg: Any,
                inputs: Tensor, samples: Any, onnx_outputs: Sequence[np.ndarray],
                onnx_path: Path, codebase: str) -> Dict[str, Dict[str, Any]]:
    """Every comparison of the export, by name.

    ``onnx_vs_converted`` always; with a training-form model also ``onnx_vs_training_form``
    and ``converted_vs_training_form``; detectors also ``pre_nms`` (raw head outputs).
    """
    references = rewritten_forward(
        [model] + ([training_form] if training_form is not None else []), deploy_cfg,
        inputs, samples)
    deployed_ref = references[0]
    comparisons = dict(
        onnx_vs_converted=compare_outputs(deployed_ref, onnx_outputs, codebase))
    if training_form is not None:
        training_ref = references[1]
        comparisons['onnx_vs_training_form'] = compare_outputs(training_ref, onnx_outputs,
                                                               codebase)
        comparisons['converted_vs_training_form'] = compare_outputs(
            training_ref, [t.numpy() for t in deployed_ref], codebase)
    if codebase == 'mmdet':
        comparisons['pre_nms'] = compare_pre_nms(model, training_form, inputs, onnx_path)
    return comparisons


def comparison_failures(name: str, result: Dict[str, Any], tolerance: float) -> List[str]:
    """Why one comparable comparison (a dict of :func:`rep_mm.deploy.onnx_checks.errors`) fails at
    ``tolerance``: its non-finite findings / empty outputs, or ``max_rel`` undefined or above
    ``tolerance``. Empty: it passes."""
    reasons = list(result.get('failures') or [])
    if not reasons:
        max_rel = result.get('max_rel')
        if max_rel is None or not math.isfinite(max_rel):
            reasons.append(f'max rel error undefined ({max_rel})')
        elif not max_rel <= tolerance:
            reasons.append(f'max rel error {max_rel:.3g} > {tolerance:g}')
    return [f'{name}: {reason}' for reason in reasons]


def judge(data: Dict[str, Any], key: str, codebase: str, tolerance: float) -> List[str]:
    """The failures of an export (empty: passed) from ``data['comparisons']`` and
    ``data['graph']``; ``key`` names the comparison held against ``tolerance``.

    A NaN or infinity found by any comparison is a failure, whichever comparison is held
    against ``tolerance`` (a reference that is itself non-finite cannot be verified).
    A detector whose kept boxes differ while the raw head outputs before NMS agree is a
    threshold tie, not a failure: then ``data['note']`` says so.
    """
    comparisons, graph = data['comparisons'], data['graph']
    final = comparisons[key]
    failures = []
    pre_nms = comparisons.get('pre_nms')
    pre_nms_ok = (codebase == 'mmdet' and pre_nms is not None and pre_nms['comparable'] and
                  not comparison_failures('pre_nms', pre_nms, tolerance))
    if not final['comparable'] and pre_nms_ok:
        # a score on the NMS threshold flips a box; the graph itself computes the same
        data['note'] = (f'{key}: {final["note"]}; the raw head outputs before NMS agree, '
                        f'so this is a threshold tie, not a parity failure')
    elif not final['comparable']:
        failures.append(final['note'])
    else:
        failures.extend(comparison_failures(key, final, tolerance))
    for name, result in comparisons.items():
        if name not in (key, 'pre_nms') and result.get('comparable') and result.get('nonfinite'):
            failures.extend(comparison_failures(name, result, math.inf))
    failures.extend(f'graph: {reason}' for reason in graph['failures'])
    if pre_nms is not None and pre_nms['comparable']:
        failures.extend(f'pre-NMS head outputs: {reason}' for reason in
                        comparison_failures('pre_nms', pre_nms, tolerance))
    return failures
