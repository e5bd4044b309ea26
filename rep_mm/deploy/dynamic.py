"""Dynamic-shape checks: an ONNX graph exported with ``dynamic_axes`` run in onnxruntime at
several input sizes (and batch 2) against the same PyTorch forward under mmdeploy's rewrites,
compared like the static graph (:func:`rep_mm.deploy.onnx_checks.compare_outputs`: any NaN /
inf fails).

A graph can export with dynamic axes and still hold constants of the traced size (e.g. a
kernel computed from the shape in Python); only running it at other sizes shows that.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['dynamic_axes_of', 'check_sizes', 'check_dynamic']


def dynamic_axes_of(deploy_cfg: Any) -> Dict[str, Dict[int, str]]:
    """``onnx_config.dynamic_axes`` as ``{name: {axis: label}}`` (empty: a static graph)."""
    axes = deploy_cfg.onnx_config.get('dynamic_axes') or {}
    out = {}
    for name, spec in axes.items():
        if isinstance(spec, (list, tuple)):
            spec = {int(a): f'{name}_{a}' for a in spec}
        out[name] = {int(a): str(label) for a, label in dict(spec).items()}
    return out


def check_sizes(codebase: str, exported_hw: Sequence[int],
                axes: Dict[int, str]) -> List[Tuple[int, int, int]]:
    """The ``(batch, H, W)`` sizes to run: the exported size plus others the model allows.

    Batch 2 where axis 0 is dynamic; other H/W where axes 2 and 3 are. Segmentors (PSPNet's
    pooling on the stride-4 map needs H/4 and W/4 divisible by 6) get multiples of 24;
    detectors multiples of 32 (the data preprocessor's ``pad_size_divisor``).
    """
    h, w = int(exported_hw[0]), int(exported_hw[1])
    batch = 2 if 0 in axes else 1
    sizes = [(1, h, w)]
    if 2 in axes and 3 in axes:
        step = {'mmseg': 24, 'mmdet': 32}.get(codebase, 8)
        smaller = max(step, (h // 2) // step * step)
        larger = (h + h // 2 + step - 1) // step * step
        sizes += [(batch, smaller, smaller), (1, larger, max(step, w // step * step))]
    elif batch == 2:
        sizes.append((2, h, w))
    return list(dict.fromkeys(sizes))


def _inputs_at(inputs: Tensor, batch: int, h: int, w: int) -> Tensor:
    """The real (preprocessed) image resized to ``h x w``; batch item 1 is its mirror image, so
    that the batch items differ."""
    image = inputs[:1]
    if tuple(image.shape[-2:]) != (h, w):
        image = torch.nn.functional.interpolate(image, size=(h, w), mode='bilinear',
                                                align_corners=False)
    items = [image, torch.flip(image, dims=[3])][:batch]
    items += [image] * (batch - len(items))
    return torch.cat(items, 0).contiguous()


def _samples_at(samples: Sequence[Any], batch: int, h: int, w: int) -> List[Any]:
    """Data samples for the resized batch: shapes set to ``(h, w)``, scale factor kept."""
    out = []
    for index in range(batch):
        sample = copy.deepcopy(samples[min(index, len(samples) - 1)])
        meta = dict(img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w))
        if 'ori_shape' in sample.metainfo:
            meta['ori_shape'] = (h, w)
        if 'scale_factor' in sample.metainfo:
            meta['scale_factor'] = (1.0, 1.0)
        sample.set_metainfo(meta)
        out.append(sample)
    return out


def _check_size(patched: nn.Module, session: Any, input_name: str, inputs: Tensor,
                samples: Sequence[Any], size: Tuple[int, int, int], codebase: str,
                tolerance: float) -> Tuple[Dict[str, Any], List[str]]:
    """Run PyTorch and the graph at one ``(batch, H, W)`` and compare; ``(entry, failures)``."""
    from .checks import comparison_failures
    from .onnx_checks import compare_outputs, flatten_outputs
    x = _inputs_at(inputs, *size)
    entry: Dict[str, Any] = dict(input_shape=list(x.shape))
    label = f'dynamic {entry["input_shape"]}'
    try:
        torch_out = [t.detach().cpu().numpy() for t in flatten_outputs(
            patched(x, _samples_at(samples, *size), mode='predict'))]
    except Exception as error:  # noqa: BLE001 - the model does not allow this size
        entry.update(passed=False, note=f'PyTorch forward failed: '
                                        f'{type(error).__name__}: {error}')
        return entry, [f'{label}: {entry["note"]}']
    try:
        onnx_out = session.run(None, {input_name: x.numpy()})
    except Exception as error:  # noqa: BLE001 - reported per size
        first = str(error).strip().splitlines()[0] if str(error).strip() else ''
        entry.update(passed=False, note=f'onnxruntime failed: {type(error).__name__}:'
                                        f' {first}')
        return entry, [f'{label}: {entry["note"]}']
    result = compare_outputs(torch_out, onnx_out, codebase)
    reasons = (comparison_failures(label, result, tolerance) if result['comparable']
               else [f'{label}: {result["note"]}'])
    entry.update(outputs=[list(o.shape) for o in onnx_out], passed=not reasons, **result)
    return entry, reasons


def check_dynamic(model: nn.Module, reference_model: Optional[nn.Module], deploy_cfg: Any,
                  inputs: Tensor, samples: Sequence[Any], onnx_path: Path, codebase: str,
                  tolerance: float) -> Dict[str, Any]:
    """Run the dynamic graph at each size of :func:`check_sizes` and compare with PyTorch.

    ``reference_model`` (the training form, if any; else ``model``) is run under mmdeploy's
    rewrites in eager mode on the same resized input. Returns ``dict(dynamic_axes, sizes=[...],
    failures=[...])``; each size has ``input_shape``, the comparison and ``passed``.
    """
    import onnxruntime as ort
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_backend
    axes = dynamic_axes_of(deploy_cfg)
    input_name = deploy_cfg.onnx_config.input_names[0]
    sizes = check_sizes(codebase, inputs.shape[-2:], axes.get(input_name, {}))
    reference = reference_model if reference_model is not None else model
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
    backend = get_backend(deploy_cfg).value
    opset = deploy_cfg.onnx_config.get('opset_version', 11)
    patched = patch_model(reference, cfg=deploy_cfg, backend=backend, ir=IR.ONNX)
    results, failures = [], []
    with RewriterContext(cfg=deploy_cfg, backend=backend, ir=IR.ONNX, opset=opset), \
            torch.no_grad():
        for size in sizes:
            entry, reasons = _check_size(patched, session, input_name, inputs, samples, size,
                                         codebase, tolerance)
            results.append(entry)
            failures.extend(reasons)
    return dict(dynamic_axes={k: {str(a): v for a, v in d.items()} for k, d in axes.items()},
                sizes=results, failures=failures,
                against='training form' if reference_model is not None else 'converted')
