""":func:`quantize`: fold + export (``rep_mm.deploy.export``), calibrate on the train set,
quantize with onnxruntime, check its int8 kernels, evaluate fp32 and int8, time both, report."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .calibration import TrainSetReader, _static_hw
from .data import build_dataset, build_preprocessor, load_config, to_onnx_input
from .errors import QuantizationError, QuantizationFailed
from .evaluate import evaluate_sessions, pack_predictions
from .latency import interleaved_latency, make_session
from .ort_quant import check_op_types, int8_kernels, op_counts, quantizable_op_types, \
    quantize_onnx
from .report import write_report

__all__ = ['quantize', 'QUANT_OUTPUTS', 'SUPPORTED_CODEBASES']

QUANT_OUTPUTS = ('end2end_int8.onnx', 'quant_report.json')
SUPPORTED_CODEBASES = {'mmpretrain': 'classification', 'mmseg': 'segmentation'}


def _check_arguments(config: str, work: Path, checkpoint: Optional[str], random_init: bool,
                     onnx: Optional[str], calib: Any, threads: Any, runs: Any,
                     op_types: Optional[Sequence[str]], overwrite: bool) -> None:
    """Every check that needs no model: raises :class:`QuantizationError`."""
    if not isinstance(calib, int) or isinstance(calib, bool) or calib <= 0:
        raise QuantizationError(f'--calib must be a positive number of images, got {calib!r}')
    for name, value in (('--threads', threads), ('--runs', runs)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise QuantizationError(f'{name} must be a positive integer, got {value!r}')
    if not os.path.isfile(config):
        raise QuantizationError(f'config {config!r} does not exist (give an mmpretrain or mmseg '
                                f'config that uses rep_mm)')
    given = [n for n, v in (('a checkpoint', checkpoint), ('--random-init', random_init),
                            ('--onnx', onnx)) if v]
    if len(given) != 1:
        raise QuantizationError(f'give exactly one of a checkpoint, --random-init or --onnx '
                                f'(an fp32 end2end.onnx of rep-mm export); got '
                                f'{", ".join(given) or "none"}')
    for path, what in ((checkpoint, 'checkpoint'), (onnx, 'ONNX file')):
        if path is not None and not os.path.isfile(path):
            raise QuantizationError(f'{what} {path!r} does not exist')
    if work.exists() and not work.is_dir():
        raise QuantizationError(f'work dir {str(work)!r} exists and is not a directory')
    for name in QUANT_OUTPUTS:
        target = work / name
        for path in (config, checkpoint, onnx):
            if path and os.path.realpath(path) == os.path.realpath(target):
                raise QuantizationError(f'input {path!r} lies in the work dir as {name}, which '
                                        f'quantize writes; choose another work dir')
        if target.exists() and not overwrite:
            raise QuantizationError(f'work dir {str(work)!r} already holds {name}; choose an '
                                    f'empty work dir or pass --overwrite')
    if op_types is not None:
        allowed = quantizable_op_types()
        bad = [op for op in op_types if op not in allowed]
        if bad:
            raise QuantizationError(f'onnxruntime cannot quantize op type(s) {bad}; allowed: '
                                    f'{", ".join(allowed)}')


@dataclass
class _Folded:
    """The paths of the config's re-param blocks and the converted model they belong to: what
    the fp32 graph is checked against (:func:`_check_folded`)."""
    blocks: List[str]
    model: Any


def _model_facts(cfg: Any, seed: int) -> Tuple[str, _Folded]:
    """Build the model (seeded, as mmdeploy) and convert it: its codebase and the converted
    model with the paths of its re-param blocks."""
    from ..deploy import DeployError, codebase_of
    from ..deploy.model import build_like_mmdeploy
    from ..reparam import reparameterize
    model = build_like_mmdeploy(cfg, seed).eval()
    try:
        codebase = codebase_of(model)
    except DeployError as error:
        raise QuantizationError(str(error)) from None
    if codebase not in SUPPORTED_CODEBASES:
        raise QuantizationError(
            f'{type(model).__name__} is an {codebase} model: rep-mm quantize supports '
            f'classifiers (mmpretrain) and segmentors (mmseg); detectors are not supported yet '
            f'(onnxruntime quantizes their Conv tower, but calibration and box evaluation '
            f'through the config are not written; see docs/quantization.md)')
    rep = reparameterize(model)
    return codebase, _Folded(list(rep.converted) + list(rep.already_deployed), model)


def _check_folded(onnx_path: Path, fused: _Folded) -> Dict[str, Any]:
    """Raise :class:`QuantizationError` when the fp32 graph is not the folded model.

    The export's own family-aware check (:func:`rep_mm.deploy.graph.graph_checks` with the
    converted model): every block's fused operator is exactly one node, no training-time
    branch or foldable BatchNormalization is left. Stand-alone BNs of a family's deploy form
    (RepMLPNet's ``prebn1`` / ``prebn2`` / ``head_norm``, after a residual sum) are allowed,
    and a block may hold more than its fused Conv (RepMLP's global-perceptron convs)."""
    from ..deploy.graph import graph_checks
    graph = graph_checks(onnx_path, fused.blocks, model=fused.model)
    if graph['failures']:
        raise QuantizationError(
            f'{onnx_path} is not a folded model ({graph["failures"][0]}); int8 needs every '
            f'block folded: export with rep-mm export (it folds them) or let quantize export '
            f'from a checkpoint')
    return graph


def _onnx_input(path: Path) -> Tuple[str, List[Any]]:
    """Name and shape (ints, or names of dynamic dims) of the graph's single input."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise QuantizationError(f'{path} has {len(inputs)} inputs; one image input is needed')
    dims = [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
            for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _deploy_input_shape(deploy_config: Optional[str], codebase: str) -> Tuple[Path, List[Any]]:
    """The deploy config used and the NCHW input shape its static ``input_shape`` gives."""
    from mmengine.config import Config

    from ..deploy import deploy_config_for
    path = Path(deploy_config) if deploy_config else deploy_config_for(codebase)
    if not path.is_file():
        raise QuantizationError(f'deploy config {str(path)!r} does not exist')
    shape = Config.fromfile(str(path)).onnx_config.get('input_shape')
    if not shape:
        raise QuantizationError(f'deploy config {str(path)} has no static onnx_config.'
                                f'input_shape; int8 calibration needs a static input size')
    return path, [1, 3, int(shape[1]), int(shape[0])]  # mmdeploy's input_shape is [W, H]


def _export(config: str, work: Path, checkpoint: Optional[str], random_init: bool,
            deploy_config: Optional[str], overwrite: bool, unsafe_load: bool, seed: int,
            quiet: bool) -> Dict[str, Any]:
    """``rep_mm.deploy.export`` (no SDK meta); raises when its ONNX check failed."""
    from ..deploy import DeployError, export
    try:
        report = export(config, str(work), checkpoint=checkpoint, random_init=random_init,
                        deploy_config=deploy_config, overwrite=overwrite,
                        unsafe_load=unsafe_load, seed=seed, sdk=False, quiet=quiet)
    except DeployError as error:
        raise QuantizationError(f'export: {error}') from None
    if not report.passed:
        raise QuantizationFailed(f'the fp32 export failed its check ({report.data["failures"]}); '
                                 f'see {work / "report.json"}')
    return dict(passed=True, report=str(work / 'report.json'), checked=report.data['checked'],
                blocks=report.data['blocks'], onnx=report.data['onnx']['path'])


def _latency(cfg: Any, codebase: str, sessions: Dict[str, Any], preprocessor: Any,
             input_hw: Optional[Tuple[int, int]], with_argmax: bool, threads: int,
             runs: int) -> Dict[str, Any]:
    """onnxruntime latency of each session on a val image (batch 1), and end to end: load the
    image file, val pipeline, data preprocessor, onnxruntime, packed prediction."""
    dataset = build_dataset(cfg, 'val_dataloader', input_hw, codebase, 'validation')
    first = next(iter(sessions.values()))
    name, shape = first.get_inputs()[0].name, first.get_inputs()[0].shape
    array, _ = to_onnx_input(dataset[0], preprocessor, shape, 'val image 0')
    model = interleaved_latency(
        {key: (lambda s=s: s.run(None, {name: array})) for key, s in sessions.items()}, runs)

    def end_to_end(session: Any) -> Any:
        inputs, samples = to_onnx_input(dataset[0], preprocessor, shape, 'val image 0')
        return pack_predictions(codebase, session.run(None, {name: inputs}), samples,
                                with_argmax)
    e2e_runs = max(10, runs // 4)
    e2e = interleaved_latency({key: (lambda s=s: end_to_end(s)) for key, s in sessions.items()},
                              e2e_runs)
    return dict(batch=1, threads=threads, runs=runs, end_to_end_runs=e2e_runs, model=model,
                model_ratio=model['int8']['median_ms'] / model['fp32']['median_ms'],
                end_to_end=e2e,
                end_to_end_ratio=e2e['int8']['median_ms'] / e2e['fp32']['median_ms'],
                input_shape=list(array.shape), interleaved=True,
                note='medians of interleaved runs; on a loaded machine only the ratios are '
                     'meaningful (load_average in this report)')


def quantize(config: str, work_dir: str, checkpoint: Optional[str] = None,
             random_init: bool = False, onnx: Optional[str] = None, calib: int = 512,
             per_tensor: bool = False, deploy_config: Optional[str] = None,
             op_types: Optional[Sequence[str]] = None,
             cfg_options: Optional[Dict[str, Any]] = None, threads: int = 1, runs: int = 100,
             seed: int = 0, overwrite: bool = False, unsafe_load: bool = False,
             int8_head: bool = False, quiet: bool = False) -> Dict[str, Any]:
    """Post-training int8 quantization of a rep_mm classifier / segmentor with onnxruntime.

    Args:
        config: mmpretrain / mmseg config using rep_mm.
        work_dir: output dir: the export's files (``end2end.onnx``, ``converted.pth`` ...),
            ``end2end_int8.onnx`` and ``quant_report.json``.
        checkpoint / random_init / onnx: exactly one: a checkpoint (training-form or
            converted) to fold and export, random weights with randomised BN statistics, or an
            already exported, folded fp32 graph of this config (quantized, not re-exported).
        calib: number of calibration images from the config's train set (> 0).
        per_tensor: per-tensor int8 weights instead of per output channel.
        deploy_config: mmdeploy deploy config (default the shipped static one of the task).
        op_types: op types to quantize (default: all onnxruntime can).
        int8_head: quantize the head too (default: the nodes from the last Conv / Gemm to
            the outputs stay float, :func:`.ort_quant.head_nodes`).
        cfg_options: config overrides (e.g. ``{'data_root': DIR}``).
        threads: onnxruntime intra-op threads for the latency numbers.
        runs: interleaved runs per graph for the latency medians.

    Returns:
        The report (also written to ``quant_report.json``).

    Raises:
        QuantizationError: bad input (found before the export and quantization).
        QuantizationFailed: the export check failed or onnxruntime runs no int8 kernel.
    """
    work = Path(work_dir).expanduser().absolute()
    timings: Dict[str, float] = {}
    with _timed(timings, 'checks'):
        _check_arguments(config, work, checkpoint, random_init, onnx, calib, threads, runs,
                         op_types, overwrite)
        inputs = _checked_inputs(config, cfg_options, onnx, deploy_config, calib, seed)
    with _timed(timings, 'export'):
        export, fp32_path, graph, shape = _fp32_graph(
            inputs, config, work, checkpoint, random_init, onnx, deploy_config, overwrite,
            unsafe_load, seed, quiet)
        chosen = check_op_types(op_counts(fp32_path), op_types)
    int8_path = work / 'end2end_int8.onnx'
    with _timed(timings, 'quantize'):
        settings = quantize_onnx(fp32_path, int8_path, inputs.reader, chosen, per_tensor,
                                 float_head=not int8_head)
    kernels = int8_kernels(int8_path, threads)
    evaluation, latency = _evaluate_and_time(inputs, fp32_path, int8_path, shape, threads,
                                             runs, timings)
    data = dict(task=SUPPORTED_CODEBASES[inputs.codebase], codebase=inputs.codebase,
                config=os.path.abspath(config), checkpoint=checkpoint and
                os.path.abspath(checkpoint), random_init=random_init, work_dir=str(work),
                deploy_config=str(inputs.deploy_path) if inputs.deploy_path else None,
                fp32_onnx=str(fp32_path), int8_onnx=str(int8_path),
                fp32_bytes=fp32_path.stat().st_size, int8_bytes=int8_path.stat().st_size,
                export=export, fp32_graph={key: graph[key] for key in (
                    'nodes', 'batch_norm_nodes', 'conv_nodes', 'fused_blocks')},
                calibration=dict(source='train_dataloader.dataset (train pipeline, fitted to '
                                        'the static input) + model data_preprocessor',
                                 requested=inputs.reader.requested, used=inputs.reader.used,
                                 seed=seed, pipeline=inputs.reader.pipeline()),
                quantization=settings, int8_kernels=kernels, evaluation=evaluation,
                latency=latency, seconds=timings)
    write_report(data, work)
    return data


@contextlib.contextmanager
def _timed(timings: Dict[str, float], name: str) -> Iterator[None]:
    """Adds the seconds the block took to ``timings[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


@dataclass
class _Inputs:
    """What :func:`quantize` checked before any work: the config, its toolbox, the fused
    blocks, the preprocessing, the expected graph input and the calibration reader."""
    cfg: Any
    codebase: str
    fused: Any
    preprocessor: Any
    deploy_path: Optional[Path]
    input_name: Optional[str]
    expected: Any
    reader: Any


def _checked_inputs(config: str, cfg_options: Optional[Dict[str, Any]], onnx: Optional[str],
                    deploy_config: Optional[str], calib: int, seed: int) -> _Inputs:
    """Load the config and check everything the run will read (the first calibration image,
    the val set) before the export starts."""
    cfg = load_config(config, cfg_options)
    if 'model' not in cfg:
        raise QuantizationError(f'config {config!r} has no `model` field')
    codebase, fused = _model_facts(cfg, seed)
    preprocessor = build_preprocessor(cfg, codebase)
    if onnx is None:
        deploy_path, expected = _deploy_input_shape(deploy_config, codebase)
        input_name = None
    else:
        deploy_path = None
        input_name, expected = _onnx_input(Path(onnx))
        _check_folded(Path(onnx), fused)
    reader = TrainSetReader(cfg, preprocessor, input_name or 'input', expected, codebase,
                            calib, seed)  # reads + checks the first image now
    build_dataset(cfg, 'val_dataloader', _static_hw(expected), codebase, 'validation')
    return _Inputs(cfg, codebase, fused, preprocessor, deploy_path, input_name, expected,
                   reader)


def _fp32_graph(inputs: _Inputs, config: str, work: Path, checkpoint: Optional[str],
                random_init: bool, onnx: Optional[str], deploy_config: Optional[str],
                overwrite: bool, unsafe_load: bool, seed: int, quiet: bool):
    """``(export info, fp32 graph path, its graph facts, its input shape)``: exported through
    ``rep_mm.deploy`` or the given ``onnx``, checked to be folded and to take the expected
    input."""
    if onnx is None:
        export = _export(config, work, checkpoint, random_init, deploy_config, overwrite,
                         unsafe_load, seed, quiet)
        fp32_path = Path(export['onnx'])
    else:
        export = dict(passed=None, note='given with --onnx, not exported here', onnx=onnx)
        fp32_path = Path(onnx)
    graph = _check_folded(fp32_path, inputs.fused)
    name, shape = _onnx_input(fp32_path)
    if inputs.input_name is None:
        inputs.reader.input_name = name
        if shape != inputs.expected:
            raise QuantizationFailed(f'the exported graph takes {shape}, the deploy config '
                                     f'said {inputs.expected}')
    return export, fp32_path, graph, shape


def _evaluate_and_time(inputs: _Inputs, fp32_path: Path, int8_path: Path, shape: Any,
                       threads: int, runs: int, timings: Dict[str, float]):
    """The config's metric on its val set and the interleaved latency, fp32 and int8."""
    sessions = {'fp32': make_session(fp32_path, threads),
                'int8': make_session(int8_path, threads)}
    # segmentors: (N, 1, H, W) labels (with_argmax=True) or (N, C, H, W) logits
    out_shape = sessions['fp32'].get_outputs()[0].shape
    with_argmax = inputs.codebase == 'mmseg' and len(out_shape) == 4 and out_shape[1] == 1
    hw = _static_hw(shape)
    with _timed(timings, 'evaluate'):
        evaluation = evaluate_sessions(inputs.cfg, inputs.codebase, sessions,
                                       inputs.preprocessor, hw, with_argmax)
    with _timed(timings, 'latency'):
        latency = _latency(inputs.cfg, inputs.codebase, sessions, inputs.preprocessor, hw,
                           with_argmax, threads, runs)
    return evaluation, latency
