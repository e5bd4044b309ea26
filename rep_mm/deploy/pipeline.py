"""The export pipeline, :func:`export`, as named steps (see :mod:`rep_mm.deploy` for what is
written and compared): build + load, prepare input, fold, save, torch2onnx, onnxruntime,
compare + graph checks, dynamic shapes (deploy configs with ``dynamic_axes``), SDK meta, the
SDK run (``mmdeploy_runtime``) against PyTorch, report."""
from __future__ import annotations

import copy
import datetime
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .checks import compare_all, judge
from .errors import DeployError
from .graph import graph_checks
from .exporter import exporter_choice
from .inputs import check_inputs, sample_image
from .model import build_like_mmdeploy, ensure_resize, saved_model_config
from .progress import STEPS, Progress
from .report import DEFAULT_TOLERANCE, ExportReport, versions
from .runtime import run_onnxruntime, run_torch2onnx
from .sdk import write_sdk
from .sdk_check import check_sdk
from .dynamic import check_dynamic, dynamic_axes_of
from .tasks import TASKS, codebase_of, deploy_config_for
from .weights import init_weights

__all__ = ['export']


def build(config: str, deploy_config: Optional[str], seed: int, work: Path,
          tolerance: float) -> Tuple[Any, nn.Module, Any, ExportReport]:
    """Build the model like mmdeploy (``MODELS.build`` of ``cfg.model`` with the config's
    ``data_preprocessor``, seeded) and read the deploy config.

    Returns the config, the model, the deploy config and the report (config, codebase,
    deploy config, exporter and opset filled in).
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if 'model' not in cfg:
        raise DeployError(f'config {config!r} has no `model` field')
    model = build_like_mmdeploy(cfg, seed)
    codebase = codebase_of(model)
    task = TASKS[codebase][0]
    deploy_path = Path(deploy_config) if deploy_config else deploy_config_for(codebase)
    if not deploy_path.is_file():
        raise DeployError(f'deploy config {str(deploy_path)!r} does not exist')
    deploy_cfg = Config.fromfile(str(deploy_path))
    dynamo = exporter_choice(deploy_cfg)  # onnx_config.dynamo, default False (TorchScript)
    report = ExportReport(task=task, work_dir=str(work), tolerance=tolerance)
    report.data.update(config=os.path.abspath(config), codebase=codebase,
                       deploy_config=str(deploy_path.resolve()),
                       exporter=('dynamo' if dynamo else 'torchscript'),
                       opset=deploy_cfg.onnx_config.get('opset_version', 11))
    return cfg, model, deploy_cfg, report


def load(model: nn.Module, checkpoint: Optional[str], random_init: bool, unsafe_load: bool,
         seed: int, data: Dict[str, Any]) -> str:
    """Put the weights into ``model`` (eval mode after); returns the checkpoint's form."""
    form, notes = init_weights(model, checkpoint, random_init, unsafe_load, seed)
    data.update(checkpoint=os.path.abspath(checkpoint) if checkpoint else None,
                checkpoint_form=form, load=notes)
    model.eval()
    return form


def prepare_input(work: Path, image: Optional[str], seed: int, cfg: Any, deploy_cfg: Any,
                  model: nn.Module, data: Dict[str, Any]) -> Tuple[Any, Path, Tensor, Any]:
    """Write ``input.png`` and the deploy-form model config; preprocess the image like mmdeploy.

    Returns the deploy model config, the image path, the input tensor ``(1, 3, H, W)`` and
    the data samples.
    """
    from mmdeploy.apis import build_task_processor
    from mmdeploy.utils import get_input_shape
    codebase = data['codebase']
    work.mkdir(parents=True, exist_ok=True)
    image_path = work / 'input.png'
    if image is None:
        sample_image(codebase, image_path, seed)
    else:
        shutil.copyfile(image, image_path)
    data['image'] = dict(path=str(image_path), source=image or 'rep_mm.datasets')

    deploy_model_cfg = saved_model_config(cfg)
    data['resize_added'] = ensure_resize(deploy_model_cfg, codebase, deploy_cfg)
    processor = build_task_processor(deploy_model_cfg, deploy_cfg, 'cpu')
    input_data, inputs = processor.create_input(str(image_path), get_input_shape(deploy_cfg),
                                                data_preprocessor=model.data_preprocessor)
    inputs = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    data['input_shape'] = list(inputs.shape)
    return deploy_model_cfg, image_path, inputs, input_data['data_samples']


def fold(model: nn.Module, form: str, data: Dict[str, Any]) -> Tuple[Optional[nn.Module], List]:
    """Convert EVERY re-param block of ``model`` in place (:func:`rep_mm.reparameterize`).

    Returns a copy of the training form (None if the checkpoint was already converted) and
    the fused blocks (converted now + already deployed).
    """
    from ..reparam import reparameterize
    training_form = copy.deepcopy(model) if form == 'training' else None
    start = time.perf_counter()
    rep = reparameterize(model)
    data['convert_seconds'] = time.perf_counter() - start
    fused = rep.converted + rep.already_deployed
    data['blocks'] = dict(converted=len(rep.converted),
                          already_deployed=len(rep.already_deployed))
    return training_form, fused


def save(model: nn.Module, config: str, num_fused: int, work: Path, overwrite: bool,
         deploy_model_cfg: Any, deploy_cfg: Any, data: Dict[str, Any]) -> str:
    """Write ``converted.pth`` (``{'state_dict', 'meta'}``, atomically), ``deploy_model.py``
    and ``deploy_cfg.py``; returns the checkpoint's path."""
    from .. import __version__
    from ..io.checkpoint import save_checkpoint_atomic
    meta = dict(config=os.path.abspath(config), deploy=True,
                source_checkpoint=data['checkpoint'],
                converted_blocks=num_fused, rep_mm_version=__version__,
                time=datetime.datetime.now().isoformat(timespec='seconds'))
    save_path = save_checkpoint_atomic(dict(state_dict=model.state_dict(), meta=meta),
                                       work / 'converted.pth', overwrite=overwrite)
    deploy_model_cfg.dump(str(work / 'deploy_model.py'))
    deploy_cfg.dump(str(work / 'deploy_cfg.py'))
    return save_path


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
        progress.step(STEPS[0])
        cfg, model, deploy_cfg, report = build(config, deploy_config, seed, work, tolerance)
        data = report.data
        codebase = data['codebase']

        progress.step(STEPS[1])
        form = load(model, checkpoint, random_init, unsafe_load, seed, data)

        progress.step('prepare input')
        deploy_model_cfg, image_path, inputs, samples = prepare_input(
            work, image, seed, cfg, deploy_cfg, model, data)

        progress.step('convert blocks')
        training_form, fused = fold(model, form, data)

        progress.step('save converted checkpoint')
        save_path = save(model, config, len(fused), work, overwrite, deploy_model_cfg,
                         deploy_cfg, data)

        progress.step('export ONNX (mmdeploy torch2onnx)')
        onnx_path, data['export_seconds'] = run_torch2onnx(
            work, image_path, deploy_cfg, deploy_model_cfg, save_path,
            dynamo=data['exporter'] == 'dynamo', exporter=data['exporter'],
            opset=data['opset'])
        data['onnx'] = dict(path=str(onnx_path), bytes=onnx_path.stat().st_size)

        progress.step('run onnxruntime')
        session, onnx_outputs = run_onnxruntime(onnx_path, inputs)
        data['outputs'] = {o.name: list(v.shape) for o, v in zip(session.get_outputs(),
                                                                  onnx_outputs)}

        progress.step('compare + check graph')
        data['comparisons'] = compare_all(model, training_form, deploy_cfg, inputs, samples,
                                          onnx_outputs, onnx_path, codebase)
        data['graph'] = graph_checks(onnx_path, fused, model=model)
        key = 'onnx_vs_training_form' if training_form is not None else 'onnx_vs_converted'
        data['checked'] = key
        failures = judge(data, key, codebase, tolerance)
        report.passed = not failures
        data['failures'] = failures

        progress.step('check dynamic shapes')
        if dynamic_axes_of(deploy_cfg):
            data['dynamic'] = check_dynamic(model, training_form, deploy_cfg, inputs,
                                            samples, onnx_path, codebase, tolerance)
            failures.extend(data['dynamic']['failures'])
        else:
            data['dynamic'] = None  # static graph (no onnx_config.dynamic_axes)

        progress.step('write SDK meta')
        data['sdk'] = write_sdk(sdk, work, deploy_cfg, deploy_model_cfg, save_path)

        progress.step('run SDK (mmdeploy_runtime)')
        if data['sdk']['written'] and sdk_run:
            reference = training_form if training_form is not None else model
            data['sdk_check'] = check_sdk(
                work, codebase, image_path, reference, deploy_cfg, deploy_model_cfg, inputs,
                samples, against='training form' if training_form is not None else 'converted')
        else:
            data['sdk_check'] = dict(ran=False, passed=None, failures=[], note=(
                'skipped (--no-sdk-run)' if data['sdk']['written'] else
                f'no SDK meta: {data["sdk"]["note"]}'))
        failures.extend(data['sdk_check']['failures'])
        report.passed = not failures
    finally:
        progress.close()
    data['seconds'] = progress.timings
    data['versions'] = versions()
    data['threads'] = torch.get_num_threads()
    from ..demo.common import write_json_atomic
    write_json_atomic(report.to_dict(), str(work / 'report.json'))
    return report
