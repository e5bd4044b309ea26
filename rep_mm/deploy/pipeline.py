"""The export pipeline, :func:`export`, as named steps (see :mod:`rep_mm.deploy` for what is
written and compared): build + load, prepare input, fold, save (:mod:`.prepare`), torch2onnx,
onnxruntime, compare + graph checks, dynamic shapes (deploy configs with ``dynamic_axes``), SDK
meta, the SDK run (``mmdeploy_runtime``) against PyTorch, report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..io import write_json_atomic
from .checks import compare_all, judge
from .dynamic import check_dynamic, dynamic_axes_of
from .errors import DeployError
from .graph import graph_checks
from .inputs import check_inputs
from .prepare import build, fold, load, prepare_input, save
from .progress import STEPS, Progress
from .report import DEFAULT_TOLERANCE, ExportReport, versions
from .runtime import run_onnxruntime, run_torch2onnx
from .sdk import write_sdk
from .sdk_check import check_sdk

__all__ = ['export']


@dataclass
class _Export:
    """What the steps of one export hand on to the next ones."""

    work: Path
    cfg: Any
    model: nn.Module
    deploy_cfg: Any
    report: ExportReport
    form: str = 'training'
    deploy_model_cfg: Any = None
    image_path: Optional[Path] = None
    inputs: Optional[Tensor] = None
    samples: Any = None
    training_form: Optional[nn.Module] = None
    fused: List[str] = field(default_factory=list)
    save_path: str = ''
    onnx_path: Optional[Path] = None
    onnx_outputs: Sequence[np.ndarray] = ()

    @property
    def data(self) -> dict:
        return self.report.data


def _build_and_load(progress: Progress, config: str, work: Path, deploy_config: Optional[str],
                    checkpoint: Optional[str], random_init: bool, unsafe_load: bool,
                    seed: int, tolerance: float) -> _Export:
    """Steps 'build model' and 'load weights'."""
    progress.step(STEPS[0])
    cfg, model, deploy_cfg, report = build(config, deploy_config, seed, work, tolerance)
    run = _Export(work, cfg, model, deploy_cfg, report)
    progress.step(STEPS[1])
    run.form = load(model, checkpoint, random_init, unsafe_load, seed, run.data)
    return run


def _convert_and_save(progress: Progress, run: _Export, config: str, image: Optional[str],
                      seed: int, overwrite: bool) -> None:
    """Steps 'prepare input', 'convert blocks' and 'save converted checkpoint'."""
    progress.step('prepare input')
    run.deploy_model_cfg, run.image_path, run.inputs, run.samples = prepare_input(
        run.work, image, seed, run.cfg, run.deploy_cfg, run.model, run.data)
    progress.step('convert blocks')
    run.training_form, run.fused = fold(run.model, run.form, run.data)
    progress.step('save converted checkpoint')
    run.save_path = save(run.model, config, len(run.fused), run.work, overwrite,
                         run.deploy_model_cfg, run.deploy_cfg, run.data)


def _export_and_run(progress: Progress, run: _Export) -> None:
    """Steps 'export ONNX (mmdeploy torch2onnx)' and 'run onnxruntime'."""
    data = run.data
    progress.step('export ONNX (mmdeploy torch2onnx)')
    run.onnx_path, data['export_seconds'] = run_torch2onnx(
        run.work, run.image_path, run.deploy_cfg, run.deploy_model_cfg, run.save_path,
        dynamo=data['exporter'] == 'dynamo', exporter=data['exporter'], opset=data['opset'])
    data['onnx'] = dict(path=str(run.onnx_path), bytes=run.onnx_path.stat().st_size)
    progress.step('run onnxruntime')
    session, run.onnx_outputs = run_onnxruntime(run.onnx_path, run.inputs)
    data['outputs'] = {o.name: list(v.shape) for o, v in zip(session.get_outputs(),
                                                              run.onnx_outputs)}


def _check(progress: Progress, run: _Export, tolerance: float) -> List[str]:
    """Steps 'compare + check graph' and 'check dynamic shapes'; returns the failures
    (``data['failures']``, which the later steps extend)."""
    data, codebase = run.data, run.data['codebase']
    progress.step('compare + check graph')
    data['comparisons'] = compare_all(run.model, run.training_form, run.deploy_cfg, run.inputs,
                                      run.samples, run.onnx_outputs, run.onnx_path, codebase)
    data['graph'] = graph_checks(run.onnx_path, run.fused, model=run.model)
    key = 'onnx_vs_training_form' if run.training_form is not None else 'onnx_vs_converted'
    data['checked'] = key
    failures = judge(data, key, codebase, tolerance)
    run.report.passed = not failures
    data['failures'] = failures
    progress.step('check dynamic shapes')
    if dynamic_axes_of(run.deploy_cfg):
        data['dynamic'] = check_dynamic(run.model, run.training_form, run.deploy_cfg,
                                        run.inputs, run.samples, run.onnx_path, codebase,
                                        tolerance)
        failures.extend(data['dynamic']['failures'])
    else:
        data['dynamic'] = None  # static graph (no onnx_config.dynamic_axes)
    return failures


def _sdk(progress: Progress, run: _Export, sdk: bool, sdk_run: bool) -> List[str]:
    """Steps 'write SDK meta' and 'run SDK (mmdeploy_runtime)'; returns the SDK failures."""
    data = run.data
    progress.step('write SDK meta')
    data['sdk'] = write_sdk(sdk, run.work, run.deploy_cfg, run.deploy_model_cfg, run.save_path)
    progress.step('run SDK (mmdeploy_runtime)')
    if data['sdk']['written'] and sdk_run:
        trained = run.training_form is not None
        data['sdk_check'] = check_sdk(
            run.work, data['codebase'], run.image_path,
            run.training_form if trained else run.model, run.deploy_cfg, run.deploy_model_cfg,
            run.inputs, run.samples, against='training form' if trained else 'converted')
    else:
        data['sdk_check'] = dict(ran=False, passed=None, failures=[], note=(
            'skipped (--no-sdk-run)' if data['sdk']['written'] else
            f'no SDK meta: {data["sdk"]["note"]}'))
    return data['sdk_check']['failures']


def export(config: str, work_dir: str, checkpoint: Optional[str] = None,
           random_init: bool = False, image: Optional[str] = None,
           deploy_config: Optional[str] = None, tolerance: float = DEFAULT_TOLERANCE,
           overwrite: bool = False, unsafe_load: bool = False, seed: int = 0,
           sdk: bool = True, quiet: bool = False, sdk_run: bool = True) -> ExportReport:
    """Convert, export through mmdeploy, run in onnxruntime, compare; see :mod:`rep_mm.deploy`.

    Args:
        config: mm config (mmpretrain classifier, mmseg segmentor or mmdet detector).
        work_dir: output directory (created; existing outputs are kept unless ``overwrite``).
        checkpoint: training-form or converted checkpoint (loaded with ``weights_only=True``
            and the Runner allow-list unless ``unsafe_load``).
        random_init: no checkpoint: random weights with randomised BN statistics (``seed``).
        image: input image; default a real digit / digit scene from rep_mm.datasets.
        deploy_config: mmdeploy deploy config; default the shipped one of the task.
        tolerance: max relative error (ONNX vs training-form PyTorch) to pass.
        sdk: also write mmdeploy SDK meta (``export2SDK``) and run the work dir in the SDK
            (``mmdeploy_runtime``, if installed) against PyTorch.
        sdk_run: run the SDK on the written meta (False: meta only, ``sdk_check.ran`` False).

    Returns:
        ExportReport (``passed`` tells whether the end-to-end error is within ``tolerance``).

    Raises:
        DeployError: bad inputs (nothing is overwritten).
    """
    work = Path(work_dir).expanduser().absolute()
    check_inputs(config, checkpoint, random_init, image, work, overwrite)
    if not (tolerance > 0):
        raise DeployError(f'tolerance must be > 0, got {tolerance!r}')
    progress = Progress(STEPS, quiet)
    try:
        run = _build_and_load(progress, config, work, deploy_config, checkpoint, random_init,
                              unsafe_load, seed, tolerance)
        _convert_and_save(progress, run, config, image, seed, overwrite)
        _export_and_run(progress, run)
        failures = _check(progress, run, tolerance)
        failures.extend(_sdk(progress, run, sdk, sdk_run))
        run.report.passed = not failures
    finally:
        progress.close()
    run.data.update(seconds=progress.timings, versions=versions(),
                    threads=torch.get_num_threads())
    write_json_atomic(run.report.to_dict(), str(work / 'report.json'))
    return run.report
