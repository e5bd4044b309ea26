"""The exported work dir run in the mmdeploy SDK (``mmdeploy_runtime``) vs PyTorch.

The SDK reads ``deploy.json`` / ``pipeline.json`` / ``detail.json``, decodes nothing itself
(it is given the BGR image as read by OpenCV; it runs in a child process so that a crash of
its C++ code cannot take the export down), preprocesses in C++ (its own resize and
normalisation), runs ``end2end.onnx`` in its bundled onnxruntime (1.15.1) and post-processes
in C++. What is compared with PyTorch (the training-form model if there is one):

* classification: SDK top-1 ``(label, score)`` vs the softmax of the PyTorch model: same
  label, ``|score difference| <= SCORE_TOL``;
* segmentation: SDK output at the original image size (``with_argmax=True``: the label
  map; ``False``: per-class scores, argmax taken here) vs mmseg's own ``predict`` (logits
  resized bilinearly to the original size, then argmax), or with ``with_argmax=True`` vs the
  graph's label map nearest-resized as the SDK's ``ResizeMask`` does it (mmseg's agreement is
  then reported as ``mmseg_predict_agreement``, 96.7 % measured): the same class on
  ``>= PIXEL_AGREEMENT`` of the pixels (``sdk_output.spatially_constant`` flags an SDK output
  that holds one value everywhere);
* detection: SDK ``(boxes, labels)`` in original-image pixels vs the PyTorch forward under
  mmdeploy's rewrites (the graph's own post-processing: mmdeploy's NMS with the deploy
  config's thresholds) with the boxes mapped to the image as the SDK's ``ResizeBBox`` maps
  them (divided by the scale factor, ``x1, y1 >= 0``, ``x2, y2 <= W - 1, H - 1``, boxes then
  smaller than its ``min_bbox_size`` dropped: those lying on the bottom or right edge):
  every box matched one-to-one (same label, ``IoU >= IOU_MIN``,
  ``|score difference| <= SCORE_TOL``); a box within ``SCORE_TOL`` of a score threshold may be
  kept on one side only and is then reported, not failed.

mmdeploy_runtime 1.3.1's Python binding (built with a pybind11 of the numpy-1 ABI) returns,
under numpy 2, the segmentor's mask / score map and the detector's labels as arrays whose
strides are all 0: every element reads as the first one (one class or one score everywhere,
every box with one label). The segmentor's array views the SDK's result buffer, which holds
the right values in C order (measured with a synthetic graph whose output is known at every
pixel): the worker re-reads it with C-order strides (``strides_repaired``). The detector's
labels were written through the zero strides (all on element 0; the rest of the buffer is
uninitialised): the worker takes the detections from the SDK's C API (``libmmdeploy``,
``mmdeploy_detector_apply``) instead, and checks its boxes equal the binding's.

Why these tolerances: the SDK runs the same graph, so the only differences are the input's
preprocessing arithmetic (C++ resize / float normalisation vs mmcv + torch) and another
onnxruntime build. Both move scores by float rounding only (measured: classification score
difference 0, detector scores equal to the 4 digits the SDK keeps); ``SCORE_TOL``
(1e-3) and ``IOU_MIN`` (0.99: a 0.1 px shift of a 10 px box) leave two orders of margin and
still catch a wrong preprocessing (a missing normalisation or a BGR/RGB swap moves scores by
far more than 1e-3).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ['SCORE_TOL', 'IOU_MIN', 'PIXEL_AGREEMENT', 'sdk_runtime', 'run_sdk', 'check_sdk',
           'match_detections', 'box_iou']

SCORE_TOL = 1e-3
IOU_MIN = 0.99
PIXEL_AGREEMENT = 0.999


def sdk_runtime() -> Any:
    """The spec of ``mmdeploy_runtime`` (not imported here), or None when not installed."""
    import importlib.util
    return importlib.util.find_spec('mmdeploy_runtime')


_WORKER = """
import ctypes, glob, os, sys, numpy as np, cv2, mmdeploy_runtime as rt
work, codebase, image, out = sys.argv[1:5]
repaired = []


def foreign(name, value):
    # mmdeploy_runtime 1.3.1's binding (pybind11 of the numpy-1 ABI) under numpy 2 gives the
    # segmentor's mask / score map stride 0 on every axis (each element reads as the first);
    # the SDK buffer it views holds all the values in C order (measured). Re-read that buffer
    # with C-order strides and copy it. An array numpy allocated itself was FILLED through the
    # zero strides (every write on element 0; the detector's labels): nothing to re-read.
    array = np.asarray(value)
    if any(stride == 0 and size > 1 for stride, size in zip(array.strides, array.shape)):
        if array.flags['OWNDATA'] or array.base is None:
            raise RuntimeError(f'Error: {name} came back with strides {array.strides}')
        strides = [int(np.prod(array.shape[i + 1:], dtype=np.int64)) * array.itemsize
                   for i in range(array.ndim)]
        array = np.lib.stride_tricks.as_strided(array, array.shape, strides)
        repaired.append(name)
    return np.array(array, copy=True)


class Rect(ctypes.Structure):
    _fields_ = [('left', ctypes.c_float), ('top', ctypes.c_float),
                ('right', ctypes.c_float), ('bottom', ctypes.c_float)]


class Detection(ctypes.Structure):  # mmdeploy/detector.h: mmdeploy_detection_t
    _fields_ = [('label_id', ctypes.c_int), ('score', ctypes.c_float), ('bbox', Rect),
                ('mask', ctypes.c_void_p)]


class Mat(ctypes.Structure):  # mmdeploy/common.h: mmdeploy_mat_t (BGR, uint8, host)
    _fields_ = [('data', ctypes.c_void_p), ('height', ctypes.c_int), ('width', ctypes.c_int),
                ('channel', ctypes.c_int), ('format', ctypes.c_int), ('type', ctypes.c_int),
                ('device', ctypes.c_void_p)]


def detect(img):
    # the detector through the SDK's C API (libmmdeploy, the library the binding wraps): its
    # binding fills `labels` through stride 0, so every box would carry the last box's label
    lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(rt.__file__), 'libmmdeploy.so*'))[0])
    handle = ctypes.c_void_p()
    status = lib.mmdeploy_detector_create_by_path(work.encode(), b'cpu', 0, ctypes.byref(handle))
    if status != 0:
        raise RuntimeError(f'Error: mmdeploy_detector_create_by_path: status {status}')
    img = np.ascontiguousarray(img)
    mat = Mat(img.ctypes.data, img.shape[0], img.shape[1], 3, 0, 2, None)  # BGR, UINT8
    results, counts = ctypes.POINTER(Detection)(), ctypes.POINTER(ctypes.c_int)()
    status = lib.mmdeploy_detector_apply(handle, ctypes.byref(mat), 1, ctypes.byref(results),
                                         ctypes.byref(counts))
    if status != 0:
        lib.mmdeploy_detector_destroy(handle)
        raise RuntimeError(f'Error: mmdeploy_detector_apply: status {status}')
    dets = [results[i] for i in range(counts[0])]
    boxes = np.array([[d.bbox.left, d.bbox.top, d.bbox.right, d.bbox.bottom, d.score]
                      for d in dets], np.float32).reshape(-1, 5)
    labels = np.array([d.label_id for d in dets], np.int64)
    lib.mmdeploy_detector_release_result(results, counts, 1)
    lib.mmdeploy_detector_destroy(handle)
    return boxes, labels


img = cv2.imread(image)
if codebase == 'mmdet':
    boxes, labels = detect(img)
    # the binding's boxes (right strides) must be the C API's: checks the struct layout above
    binding = np.asarray(rt.Detector(model_path=work, device_name='cpu', device_id=0)(img)[0])
    if binding.reshape(-1, 5).shape != boxes.shape or not np.array_equal(
            binding.reshape(-1, 5), boxes):
        raise RuntimeError('Error: C API boxes differ from the Python binding boxes')
    arrays = dict(boxes=boxes, labels=labels)
else:
    cls = dict(mmpretrain=rt.Classifier, mmseg=rt.Segmentor)[codebase]
    result = cls(model_path=work, device_name='cpu', device_id=0)(img)
    if codebase == 'mmpretrain':
        arrays = dict(labels=np.array([r[0] for r in result]),
                      scores=np.array([r[1] for r in result]))
    else:
        arrays = dict(seg=foreign('seg', result))
np.savez(out, strides_repaired=np.array(repaired, dtype=str), **arrays)
"""


def run_sdk(work: Path, codebase: str, image_path: Path, timeout: float = 300) -> Any:
    """Run the SDK of ``codebase`` on the work dir (``device_name='cpu', device_id=0``) on the
    BGR image read by OpenCV, in a child process (a crash in the SDK's C++ code must not take
    the export down). Returns ``dict`` of arrays: ``labels``/``scores`` (classifier, best
    first), ``seg`` (segmentor: ``(H, W)`` labels or ``(C, H, W)`` scores), ``boxes (N, 5)`` /
    ``labels (N,)`` (detector), and ``strides_repaired``: the names of the arrays the SDK's
    Python binding handed out with stride 0 (see ``_WORKER``), re-read in C order. Raises
    RuntimeError with the SDK's last message on failure.
    """
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory(prefix='rep_mm_sdk_') as tmp:
        out = Path(tmp) / 'result.npz'
        done = subprocess.run([sys.executable, '-c', _WORKER, str(work), codebase,
                               str(image_path), str(out)], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0 or not out.is_file():
            lines = [line for line in (done.stderr + done.stdout).splitlines()
                     if '[error]' in line or 'Error' in line]
            detail = lines[-1].strip() if lines else (done.stderr.strip().splitlines() or
                                                      [''])[-1]
            raise RuntimeError(f'exit code {done.returncode}: {detail}')
        with np.load(out) as arrays:
            return {key: arrays[key] for key in arrays.files}


def _rewritten_outputs(model: nn.Module, deploy_cfg: Any, inputs: Tensor,
                       samples: Any) -> List[np.ndarray]:
    """``model``'s forward under mmdeploy's rewrites (what the graph computes), eager."""
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_backend

    from .onnx_checks import flatten_outputs
    backend = get_backend(deploy_cfg).value
    opset = deploy_cfg.onnx_config.get('opset_version', 11)
    patched = patch_model(model, cfg=deploy_cfg, backend=backend, ir=IR.ONNX)
    with RewriterContext(cfg=deploy_cfg, backend=backend, ir=IR.ONNX, opset=opset), \
            torch.no_grad():
        output = patched(inputs, copy.deepcopy(samples), mode='predict')
    return [t.detach().cpu().numpy() for t in flatten_outputs(output)]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of ``x1, y1, x2, y2`` boxes."""
    a, b = np.asarray(a, np.float64)[:, :4], np.asarray(b, np.float64)[:, :4]
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(ref_boxes: np.ndarray, ref_labels: np.ndarray, sdk_boxes: np.ndarray,
                     sdk_labels: np.ndarray, thresholds: Sequence[float],
                     score_tol: float = SCORE_TOL, iou_min: float = IOU_MIN,
                     box_tol: float = 0.05) -> Dict[str, Any]:
    """One-to-one greedy matching (highest reference score first, same label, best IoU).

    Boxes ``(N, 5)`` = ``x1, y1, x2, y2, score``. A pair matches when ``IoU >= iou_min`` (or,
    for degenerate boxes without area, every coordinate within ``box_tol`` pixels) and the
    scores differ by ``<= score_tol``. Unmatched boxes whose score lies within
    ``score_tol`` of one of ``thresholds`` are near-threshold (allowed); any other unmatched
    box is a mismatch. Returns counts, the worst IoU / score difference and ``passed``.
    """
    ref_boxes = np.asarray(ref_boxes, np.float64).reshape(-1, 5)
    sdk_boxes = np.asarray(sdk_boxes, np.float64).reshape(-1, 5)
    ref_labels, sdk_labels = np.asarray(ref_labels).reshape(-1), np.asarray(sdk_labels).reshape(-1)
    iou = box_iou(ref_boxes, sdk_boxes) if len(ref_boxes) and len(sdk_boxes) else \
        np.zeros((len(ref_boxes), len(sdk_boxes)))
    used = np.zeros(len(sdk_boxes), bool)
    matched, min_iou, max_score_diff = 0, 1.0, 0.0
    unmatched_ref = []
    for i in np.argsort(-ref_boxes[:, 4], kind='stable'):
        candidates = [j for j in range(len(sdk_boxes)) if not used[j] and
                      sdk_labels[j] == ref_labels[i]]
        best = max(candidates, key=lambda j: iou[i, j], default=None)
        same_box = best is not None and (iou[i, best] >= iou_min or np.abs(
            ref_boxes[i, :4] - sdk_boxes[best, :4]).max() <= box_tol)
        if same_box and \
                abs(ref_boxes[i, 4] - sdk_boxes[best, 4]) <= score_tol:
            used[best] = True
            matched += 1
            min_iou = min(min_iou, float(iou[i, best]))
            max_score_diff = max(max_score_diff, float(abs(ref_boxes[i, 4] -
                                                           sdk_boxes[best, 4])))
        else:
            unmatched_ref.append(float(ref_boxes[i, 4]))
    unmatched_sdk = [float(s) for s in sdk_boxes[~used, 4]]

    def near(score: float) -> bool:
        return any(abs(score - t) <= score_tol for t in thresholds)

    mismatched = [s for s in unmatched_ref + unmatched_sdk if not near(s)]
    return dict(reference_boxes=int(len(ref_boxes)), sdk_boxes=int(len(sdk_boxes)),
                matched=matched, min_iou=min_iou if matched else None,
                max_score_diff=max_score_diff if matched else None,
                unmatched_near_threshold=len(unmatched_ref) + len(unmatched_sdk) -
                len(mismatched), mismatched=len(mismatched), passed=not mismatched)


def _scale_back(dets: np.ndarray, sample: Any, min_bbox_size: float = 0.0) -> tuple:
    """Graph boxes (network input pixels) -> original image pixels as the SDK's ``ResizeBBox``
    maps them (``MapToOriginImage``): divided by the scale factor, then ``x1, y1`` raised to
    ``>= 0`` and ``x2, y2`` lowered to ``<= W - 1`` / ``H - 1`` (one bound each; mmdet clips
    both to ``[0, W]``). A box whose width or height is then ``< min_bbox_size`` is dropped,
    e.g. one lying on the bottom edge (``y1 = y2 = H``: ``y1`` stays ``H``, ``y2`` becomes
    ``H - 1``). Returns the boxes ``(N, 5)`` and the boolean mask of the boxes kept."""
    dets = np.array(dets, np.float64).reshape(-1, 5)
    scale = np.asarray(sample.metainfo.get('scale_factor', (1.0, 1.0)), np.float64)
    h, w = sample.metainfo['ori_shape'][:2]
    dets[:, [0, 2]] /= scale[0]
    dets[:, [1, 3]] /= scale[1]
    dets[:, :2] = np.maximum(dets[:, :2], 0)
    dets[:, 2] = np.minimum(dets[:, 2], w - 1)
    dets[:, 3] = np.minimum(dets[:, 3], h - 1)
    keep = ((dets[:, 2] - dets[:, 0]) >= min_bbox_size) & \
        ((dets[:, 3] - dets[:, 1]) >= min_bbox_size)
    return dets, keep


def _resize_bbox_params(work: Path) -> Dict[str, Any]:
    """The ``params`` of the SDK's ``ResizeBBox`` task in the work dir's pipeline.json."""
    import json
    path = work / 'pipeline.json'
    tasks = json.loads(path.read_text())['pipeline']['tasks'] if path.is_file() else []
    for task in tasks:
        if task.get('component') == 'ResizeBBox':
            return dict(task.get('params') or {})
    return {}


def _post_thresholds(deploy_cfg: Any, model_cfg: Any) -> List[float]:
    """Score thresholds applied after the network (graph NMS and the SDK's ResizeBBox)."""
    post = deploy_cfg.codebase_config.get('post_processing', {}) or {}
    out = [float(post.get('score_threshold', 0.0))]
    test_cfg = (model_cfg.model.get('test_cfg') or {}) if model_cfg is not None else {}
    if 'score_thr' in test_cfg:
        out.append(float(test_cfg['score_thr']))
    return out


def _check_classification(result: Dict[str, Any], reference: nn.Module, deploy_cfg: Any,
                          model_cfg: Any, work: Path, inputs: Tensor, samples: Any,
                          out: Dict[str, Any]) -> List[str]:
    """The SDK class and score vs the graph's PyTorch forward; ``out`` gets the
    numbers, the failures are returned."""
    failures: List[str] = []
    scores = _rewritten_outputs(reference, deploy_cfg, inputs, samples)[0][0]
    label, score = int(result['labels'][0]), float(result['scores'][0])
    ref_label = int(np.argmax(scores))
    diff = abs(score - float(scores[ref_label]))
    out.update(sdk_label=label, sdk_score=score, torch_label=ref_label,
               torch_score=float(scores[ref_label]), score_diff=diff, score_tol=SCORE_TOL,
               torch_margin=float(np.sort(scores)[-1] - np.sort(scores)[-2]))
    if label != ref_label:
        failures.append(f'SDK class {label} != PyTorch class {ref_label}')
    elif diff > SCORE_TOL:
        failures.append(f'SDK score differs by {diff:.3g} > {SCORE_TOL:g}')
    return failures


def _check_segmentation(result: Dict[str, Any], reference: nn.Module, deploy_cfg: Any,
                        model_cfg: Any, work: Path, inputs: Tensor, samples: Any,
                        out: Dict[str, Any]) -> List[str]:
    """The SDK mask vs PyTorch's (module docstring); ``out`` gets the numbers, the
    failures are returned."""
    failures: List[str] = []
    with torch.no_grad():
        pred = reference.predict(inputs, copy.deepcopy(samples))[0]
    ref_mask = pred.pred_sem_seg.data[0].cpu().numpy()
    ref_logits = pred.seg_logits.data.cpu().numpy()
    sdk = result['seg']
    with_argmax = deploy_cfg.codebase_config.get('with_argmax', True)
    out['sdk_output'] = dict(shape=list(sdk.shape), dtype=str(sdk.dtype),
                             with_argmax=with_argmax)
    sdk_mask = sdk.argmax(0) if sdk.ndim == 3 else sdk.reshape(ref_mask.shape)
    if sdk.ndim == 2 and sdk_mask.shape == ref_mask.shape:
        # with_argmax: the graph's label map (network input size) resized by the SDK's
        # ResizeMask with nearest neighbour (OpenCV: source pixel floor(i * scale)), which
        # mmseg's predict (bilinear logits, then argmax) cannot match on every pixel (a 3x
        # downscale picks pixel 3i there, 3i + 1 in mmseg): that reference is the one
        # held to PIXEL_AGREEMENT, mmseg's is reported (mmseg_predict_agreement)
        import cv2
        out['mmseg_predict_agreement'] = float((sdk_mask == ref_mask).mean())
        graph_mask = _rewritten_outputs(reference, deploy_cfg, inputs, samples)[0]
        graph_mask = np.asarray(graph_mask).reshape(graph_mask.shape[-2:]).astype(np.int32)
        ref_mask = cv2.resize(graph_mask, ref_mask.shape[::-1],
                              interpolation=cv2.INTER_NEAREST)
        out['reference'] = 'graph label map, nearest-resized as the SDK does'
    else:
        out['reference'] = 'mmseg predict (bilinear logits at the image size, argmax)'
    if sdk_mask.shape != ref_mask.shape:
        failures.append(f'SDK mask shape {list(sdk_mask.shape)} != PyTorch '
                        f'{list(ref_mask.shape)}')
    else:
        agree = float((sdk_mask == ref_mask).mean())
        out.update(pixel_agreement=agree, pixels=int(ref_mask.size),
                   pixels_differing=int((sdk_mask != ref_mask).sum()),
                   required=PIXEL_AGREEMENT)
        if sdk.ndim == 3 and sdk.shape == ref_logits.shape:
            out['score_map_max_abs'] = float(np.abs(sdk - ref_logits).max())
        out['sdk_output']['spatially_constant'] = bool(np.ptp(sdk.reshape(
            (sdk.shape[0], -1) if sdk.ndim == 3 else (1, -1)), axis=1).max() == 0)
        if agree < PIXEL_AGREEMENT:
            constant = (' (the SDK output is spatially constant: one pixel\'s value '
                        'everywhere)' if out['sdk_output']['spatially_constant'] else '')
            failures.append(f'SDK mask agrees with PyTorch on {agree:.4%} of the pixels '
                            f'< {PIXEL_AGREEMENT:.1%}{constant}')
    return failures


def _check_detection(result: Dict[str, Any], reference: nn.Module, deploy_cfg: Any,
                     model_cfg: Any, work: Path, inputs: Tensor, samples: Any,
                     out: Dict[str, Any]) -> List[str]:
    """The SDK boxes vs the graph's, mapped back as the SDK does; ``out`` gets the
    numbers, the failures are returned."""
    failures: List[str] = []
    dets, labels = _rewritten_outputs(reference, deploy_cfg, inputs, samples)[:2]
    sample = samples[0]
    min_bbox_size = float(_resize_bbox_params(work).get('min_bbox_size', 0.0))
    ref_boxes, kept = _scale_back(dets[0], sample, min_bbox_size)
    sdk_boxes, sdk_labels = result['boxes'], result['labels']
    thresholds = _post_thresholds(deploy_cfg, model_cfg)
    # the graph keeps boxes >= its score threshold; the SDK drops those below score_thr
    # and those that its mapping to the original image leaves smaller than min_bbox_size
    keep = (ref_boxes[:, 4] >= max(thresholds)) & kept
    out['dropped_as_sdk_does'] = int((~kept).sum())
    match = match_detections(ref_boxes[keep], np.asarray(labels[0])[keep], sdk_boxes,
                             sdk_labels, thresholds)
    out.update(match, score_tol=SCORE_TOL, iou_min=IOU_MIN, thresholds=thresholds)
    if not match['passed']:
        failures.append(f'SDK detections: {match["mismatched"]} box(es) without a match '
                        f'(IoU >= {IOU_MIN}, score within {SCORE_TOL:g}) of '
                        f'{match["reference_boxes"]} PyTorch / {match["sdk_boxes"]} SDK')
    return failures


def check_sdk(work: Path, codebase: str, image_path: Path, reference: nn.Module,
              deploy_cfg: Any, model_cfg: Any, inputs: Tensor, samples: Any,
              against: str) -> Dict[str, Any]:
    """Run the SDK on ``image_path`` and compare with ``reference`` (see the module docstring).

    Returns ``dict(ran, passed, against, note, failures, ...)`` with the measured numbers;
    ``ran=False`` (not a failure) when ``mmdeploy_runtime`` is not installed.
    """
    if sdk_runtime() is None:
        return dict(ran=False, passed=None, failures=[],
                    note='mmdeploy_runtime is not installed (pip install --no-deps '
                         'mmdeploy-runtime==1.3.1); the SDK was not run')
    try:
        result = run_sdk(work, codebase, image_path)
    except Exception as error:  # noqa: BLE001 - the SDK's own failure is the finding
        note = f'the SDK failed: {type(error).__name__}: {error}'
        return dict(ran=True, passed=False, failures=[f'SDK: {note}'], note=note)
    import importlib.metadata as metadata
    out: Dict[str, Any] = dict(ran=True, against=against, note='',
                               runtime_version=metadata.version('mmdeploy_runtime'),
                               strides_repaired=[str(name) for name in
                                                 result.pop('strides_repaired', [])])
    check = dict(mmpretrain=_check_classification, mmseg=_check_segmentation).get(
        codebase, _check_detection)
    failures = check(result, reference, deploy_cfg, model_cfg, work, inputs, samples, out)
    out.update(passed=not failures, failures=failures)
    return out
