"""The export's steps before ONNX: the model built like mmdeploy, its weights, the input
image preprocessed like mmdeploy, every block converted and ``converted.pth`` written."""
from __future__ import annotations

import copy
import datetime
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor, nn

from .errors import DeployError
from .exporter import exporter_choice
from .inputs import sample_image
from .model import build_like_mmdeploy, ensure_resize, saved_model_config
from .report import ExportReport
from .tasks import TASKS, codebase_of, deploy_config_for
from .weights import init_weights

__all__ = ['build', 'load', 'prepare_input', 'fold', 'save']


def build(config: str, deploy_config: Optional[str], seed: int, work: Path,
          tolerance: float) -> Tuple[Any, nn.Module, Any, ExportReport]:
    """Build the model like mmdeploy (:func:`rep_mm.deploy.model.build_like_mmdeploy`: the
    config's ``data_preprocessor`` filled in, seeded) and read the deploy config.

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
    """Write ``converted.pth`` (``{'state_dict', 'meta'}``, atomically; ``meta['rep_mm_form']``
    is ``'deploy'``), ``deploy_model.py`` and ``deploy_cfg.py``; returns the checkpoint's path."""
    from .. import __version__
    from ..io import save_checkpoint_atomic, tag_form
    meta = dict(config=os.path.abspath(config), deploy=True,
                source_checkpoint=data['checkpoint'],
                converted_blocks=num_fused, rep_mm_version=__version__,
                time=datetime.datetime.now().isoformat(timespec='seconds'))
    tag_form(meta, 'deploy')
    save_path = save_checkpoint_atomic(dict(state_dict=model.state_dict(), meta=meta),
                                       work / 'converted.pth', overwrite=overwrite)
    deploy_model_cfg.dump(str(work / 'deploy_model.py'))
    deploy_cfg.dump(str(work / 'deploy_cfg.py'))
    return save_path
