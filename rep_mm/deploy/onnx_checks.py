"""Checks of an exported ONNX graph's outputs against PyTorch: output errors and the raw
detector head outputs before NMS (the graph's structure: :mod:`rep_mm.deploy.graph`).

Used by :mod:`rep_mm.deploy`; every function works on one model / one graph file. The errors
come from :func:`rep_mm.verify.compare.compare`: a NaN or infinity in either output is a finding
(tensor, count, first index) that fails the comparison, and ``max_abs`` / ``max_rel`` are then
NaN (undefined), with the errors over the finite values kept as
``finite_max_abs`` / ``finite_max_rel``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..verify.compare import as_float64, compare

__all__ = ['flatten_outputs', 'errors', 'rewritten_forward', 'compare_outputs',
           'compare_pre_nms']


def flatten_outputs(output: Any) -> List[Tensor]:
    """The tensors of a (nested) output: tuple / list / dict of tensors, in order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flatten_outputs(item)]
    if isinstance(output, dict):
        return [t for key in output for t in flatten_outputs(output[key])]
    raise ValueError(f'unexpected model output of type {type(output).__name__}')


def errors(reference: Sequence[Any], candidate: Sequence[Any],
           names: Optional[Sequence[str]] = None, allow_empty: bool = False) -> Dict[str, Any]:
    """:meth:`rep_mm.verify.compare.Comparison.to_dict` of paired arrays / tensors (float64).

    Keys: ``max_abs``, ``max_rel`` (NaN when any value is NaN / inf), ``finite_max_abs``,
    ``finite_max_rel``, ``max_reference``, ``tensors``, ``elements``, ``finite``,
    ``reference_finite``, ``nonfinite`` (findings: tensor, name, shape, kind, side, count,
    first_index), ``notes`` and ``failures`` (the reasons that fail at any tolerance:
    non-finite values, nothing compared unless ``allow_empty``).
    """
    if len(reference) != len(candidate):
        raise ValueError(f'{len(reference)} reference outputs vs {len(candidate)} ONNX outputs')
    return compare(list(reference), list(candidate), names=names,
                   allow_empty=allow_empty).to_dict(json_safe=False)


def rewritten_forward(models: Sequence[nn.Module], deploy_cfg: Any, inputs: Tensor,
                      data_samples: Any) -> List[List[Tensor]]:
    """Each model's forward under mmdeploy's rewrites, in eager PyTorch: what the graph holds.

    One ``RewriterContext`` for all models (entering and leaving one costs about a second).
    """
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_backend
    backend = get_backend(deploy_cfg).value
    opset = deploy_cfg.onnx_config.get('opset_version', 11)
    patched = [patch_model(m, cfg=deploy_cfg, backend=backend, ir=IR.ONNX) for m in models]
    outputs = []
    with RewriterContext(cfg=deploy_cfg, backend=backend, ir=IR.ONNX, opset=opset), \
            torch.no_grad():
        for model in patched:
            output = model(inputs, copy.deepcopy(data_samples), mode='predict')
            outputs.append([t.detach().cpu() for t in flatten_outputs(output)])
    return outputs


def compare_outputs(reference: Sequence[Tensor], onnx_outputs: Sequence[np.ndarray],
             codebase: str) -> Dict[str, Any]:
    """Errors between paired outputs (:func:`errors`); detectors must keep the same boxes
    and labels first. ``comparable`` is False (errors None, ``note`` says why) when shapes
    or detector labels differ."""
    reference = [as_float64(t) if isinstance(t, Tensor) else np.asarray(t) for t in reference]
    shapes = dict(reference=[list(a.shape) for a in reference],
                  onnx=[list(a.shape) for a in onnx_outputs])
    if [a.shape for a in reference] != [a.shape for a in onnx_outputs]:
        return dict(comparable=False, max_abs=None, max_rel=None, shapes=shapes,
                    note=f'outputs differ in shape: {shapes["reference"]} vs {shapes["onnx"]}')
    if codebase == 'mmdet' and len(reference) == 2:
        if not np.array_equal(reference[1], onnx_outputs[1]):
            return dict(comparable=False, max_abs=None, max_rel=None, shapes=shapes,
                        note='detections after NMS differ in their labels (kept boxes differ)')
        # no box kept is possible; the raw head outputs are compared before NMS (pre_nms)
        result = errors(reference[:1], onnx_outputs[:1], allow_empty=True)
        result.update(kept_boxes=int(reference[0].shape[1]) if reference[0].ndim == 3 else None)
    else:
        result = errors(reference, onnx_outputs)
    return dict(comparable=True, shapes=shapes, note='', **result)


def _head_conv_outputs(model: nn.Module, inputs: Tensor) -> List[Tuple[str, Tensor]]:
    """``(module name, tensor)`` of each raw head output (``mode='tensor'``) made by a Conv."""
    produced: List[Tuple[str, Tensor]] = []  # holds the tensors, so ids are never reused
    handles = []

    def remember(name: str):
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            produced.append((name, output))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(remember(name)))
    try:
        with torch.no_grad():
            outputs = flatten_outputs(model(inputs, mode='tensor'))
    finally:
        for handle in handles:
            handle.remove()
    return [(next((name for name, o in produced if o is t), ''), t) for t in outputs]


def _onnx_conv_outputs(onnx_path: Path, feed: Dict[str, np.ndarray],
                       names: Sequence[str]) -> List[np.ndarray]:
    """Run the graph with the outputs of the Conv nodes that use ``<name>.weight`` exposed,
    in call order per name (a head shared across pyramid levels is called once per level)."""
    import onnx
    import onnxruntime as ort
    graph_model = onnx.load(str(onnx_path))
    by_weight: Dict[str, List[str]] = {}
    for node in graph_model.graph.node:
        if node.op_type == 'Conv' and len(node.input) > 1:
            by_weight.setdefault(node.input[1], []).append(node.output[0])
    seen: Dict[str, int] = {}
    wanted = []
    for name in names:
        found = by_weight.get(f'{name}.weight', [])
        index = seen.get(name, 0)
        if index >= len(found):
            raise ValueError(f'no Conv node with initializer {name}.weight in the graph '
                              f'(call {index + 1}); cannot compare before NMS')
        seen[name] = index + 1
        wanted.append(found[index])
    existing = {o.name for o in graph_model.graph.output}
    for value in wanted:
        if value not in existing:
            graph_model.graph.output.append(onnx.ValueInfoProto(name=value))
            existing.add(value)
    session = ort.InferenceSession(graph_model.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    return session.run(wanted, feed)


def compare_pre_nms(model: nn.Module, training_form: Optional[nn.Module],
                     inputs: Tensor, onnx_path: Path) -> Dict[str, Any]:
    """Raw head outputs (class scores, box deltas of every level) before NMS: ONNX vs PyTorch."""
    pairs = _head_conv_outputs(model, inputs)
    names = [name for name, _ in pairs]
    if not all(names):
        return dict(comparable=False, max_abs=None, max_rel=None,
                    note='some head outputs are not made by a Conv; not compared')
    feed = {'input': inputs.detach().cpu().numpy()}
    onnx_values = _onnx_conv_outputs(onnx_path, feed, names)
    reference = training_form if training_form is not None else model
    ref_values = [t for _, t in _head_conv_outputs(reference, inputs)]
    result = errors(ref_values, onnx_values, names=names)
    return dict(comparable=True, outputs=len(names), against=(
        'training form' if training_form is not None else 'converted'), note='', **result)
