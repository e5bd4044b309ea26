"""onnxruntime's static QDQ quantization of an fp32 graph, and the proof that onnxruntime runs
the result with its int8 kernels.

Steps: upgrade the opset to 13 when lower (per-channel ``DequantizeLinear`` needs its ``axis``
attribute, opset 13; mmdeploy's TorchScript export is opset 11), ``quant_pre_process`` (shape
inference + ORT's graph optimisation, so that every tensor has a known shape), then
``quantize_static`` in QDQ format: int8 weights (per output channel unless ``per_tensor``),
uint8 activations (the recommended x86/VNNI setting, ``reduce_range=False``), MinMax
calibration over the reader's images.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import QuantizationError, QuantizationFailed

__all__ = ['quantizable_op_types', 'check_op_types', 'quantize_onnx', 'int8_kernels',
           'INT8_KERNELS', 'DEFAULT_EXCLUDED_OPS']

# onnxruntime CPU kernels that compute on 8-bit data (after its QDQ fusions)
INT8_KERNELS = ('QLinearConv', 'ConvInteger', 'QLinearMatMul', 'MatMulInteger',
                'MatMulIntegerToFloat', 'QGemm', 'DynamicQuantizeMatMul', 'QLinearAdd',
                'QLinearMul', 'QLinearConcat', 'QLinearAveragePool',
                'QLinearGlobalAveragePool', 'QLinearSigmoid', 'QLinearLeakyRelu',
                'QLinearSoftmax', 'QLinearReduceMean', 'QLinearWhere', 'QAttention')
DEFAULT_EXCLUDED_OPS = ()
FLOAT_COMPUTE_OPS = ('Conv', 'Gemm', 'MatMul', 'ConvTranspose')


def head_nodes(path: Path) -> List[str]:
    """Names of the nodes from the last compute op (Conv / Gemm / MatMul) of every path to a
    graph output up to that output (e.g. the classifier's ``Gemm`` + ``Softmax``, the
    segmentor's ``conv_seg`` + ``Resize``).

    Kept in float by default: quantized, the logits take at most 256 values, so the top-1
    scores and the per-pixel argmax tie (measured: ties changed the top-1 of digits images).
    The head is one small layer, its cost is negligible.
    """
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    chosen: Dict[str, None] = {}
    stack = [o.name for o in graph.output]
    seen = set()
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        chosen[node.name] = None
        if node.op_type in FLOAT_COMPUTE_OPS:
            continue  # the path's last compute op: stop here
        stack.extend(node.input)
    return list(chosen)


def quantizable_op_types() -> List[str]:
    """Op types onnxruntime's QDQ quantizer handles (``onnxruntime.quantization.registry``)."""
    from onnxruntime.quantization.registry import QDQRegistry
    return sorted(QDQRegistry)


def check_op_types(graph_ops: Dict[str, int], requested: Optional[Sequence[str]]) -> List[str]:
    """The op types to quantize.

    ``requested`` None: every quantizable type the graph holds. Raises
    :class:`QuantizationError` for a requested type
    onnxruntime cannot quantize or that is not in the graph, and for a graph without any
    quantizable compute op.
    """
    allowed = quantizable_op_types()
    if requested is not None:
        bad = [op for op in requested if op not in allowed]
        if bad:
            raise QuantizationError(f'onnxruntime cannot quantize op type(s) {bad}; allowed: '
                                    f'{", ".join(allowed)}')
        absent = [op for op in requested if op not in graph_ops]
        if absent:
            raise QuantizationError(f'op type(s) {absent} are not in the graph, which holds '
                                    f'{", ".join(sorted(graph_ops))}')
        chosen = list(dict.fromkeys(requested))
    else:
        chosen = [op for op in allowed if op in graph_ops and op not in DEFAULT_EXCLUDED_OPS]
    if not any(op in FLOAT_COMPUTE_OPS for op in chosen):
        raise QuantizationError(
            f'no Conv / Gemm / MatMul to quantize among {chosen or "none"} (graph ops: '
            f'{", ".join(sorted(graph_ops))}); onnxruntime quantizes {", ".join(allowed)}')
    return chosen


def _prepare(src: Path, tmp: Path) -> Tuple[Path, int]:
    """Opset >= 13 (``onnx.version_converter``), then ``quant_pre_process``; returns the
    prepared graph's path and the source opset."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import quant_pre_process
    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 0)
    if opset < 13:
        model = version_converter.convert_version(model, 13)
        upgraded = tmp / 'opset13.onnx'
        onnx.save(model, str(upgraded))
        src = upgraded
    prepared = tmp / 'prepared.onnx'
    quant_pre_process(str(src), str(prepared))
    return prepared, opset


def quantize_onnx(src: Path, dst: Path, reader: Any, op_types: Sequence[str],
                  per_tensor: bool = False, float_head: bool = True) -> Dict[str, Any]:
    """Write the int8 QDQ graph of ``src`` to ``dst`` (atomically, through a temp file).

    ``float_head``: the nodes of :func:`head_nodes` stay in float.

    Returns the settings used (for the report).
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='.quant_', dir=str(dst.parent)) as tmp_dir:
        tmp = Path(tmp_dir)
        prepared, opset = _prepare(src, tmp)
        out = tmp / 'int8.onnx'
        excluded = head_nodes(prepared) if float_head else []
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=not per_tensor,
                        reduce_range=False, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded)
        os.replace(out, dst)
    return dict(format='QDQ', weights='int8 ' + ('per-tensor' if per_tensor else
                                                'per-channel'),
                activations='uint8 per-tensor (asymmetric)', calibrate_method='MinMax',
                reduce_range=False, op_types=list(op_types), preprocess='quant_pre_process',
                float_nodes=excluded,
                source_opset=opset, quantized_opset=max(opset, 13))


def op_counts(path: Path) -> Dict[str, int]:
    """``{op_type: count}`` of a graph."""
    import onnx
    ops: Dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return dict(sorted(ops.items()))


def int8_kernels(path: Path, threads: int = 1) -> Dict[str, Any]:
    """The graph onnxruntime's CPU provider actually runs (its optimised graph, written with
    ``optimized_model_filepath`` at the extended level, where the QDQ groups become
    ``QLinearConv`` etc.): counts of int8 kernels and of float compute ops left.

    Raises :class:`QuantizationFailed` when no int8 kernel is in that graph.
    """
    import onnxruntime as ort
    with tempfile.TemporaryDirectory(prefix='rep_mm_ort_opt_') as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / 'optimized.onnx')
        ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        ops = op_counts(Path(options.optimized_model_filepath))
    int8 = {op: n for op, n in ops.items() if op in INT8_KERNELS}
    float_left = {op: n for op, n in ops.items() if op in FLOAT_COMPUTE_OPS}
    result = dict(optimized_ops=ops, int8_kernels=int8, float_compute_ops=float_left,
                  int8_compute_nodes=sum(int8.values()),
                  float_compute_nodes=sum(float_left.values()))
    if not int8:
        raise QuantizationFailed(f'onnxruntime runs no int8 kernel for {path.name} (its '
                                 f'optimised graph holds {ops})')
    return result
