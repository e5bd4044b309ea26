"""Export a re-parameterized mm model to ONNX through MMDeploy and check it in onnxruntime.

:func:`export` takes an mmpretrain / mmseg / mmdet config that uses rep_mm blocks (and a
training-form or converted checkpoint, or random weights for smoke use) and writes a work dir::

    WORK_DIR/
      converted.pth        # {'state_dict', 'meta'}: every re-param block folded (deploy form)
      deploy_model.py      # the model config that rebuilds that deploy form (type
                           #   'rep_mm.ReparameterizedModel'); with converted.pth it is what
                           #   mmdeploy's torch2onnx was given
      deploy_cfg.py        # the mmdeploy deploy config used (copied, never the input file)
      end2end.onnx         # the exported graph (+ end2end.onnx.data with the dynamo exporter)
      input.png            # the real image the check ran on (a digit / digit scene by default)
      deploy.json pipeline.json detail.json   # mmdeploy SDK meta (export2SDK)
      report.json          # errors, graph checks, timings, versions

Steps: build the model like mmdeploy (``MODELS.build`` of ``cfg.model`` with the config's
``data_preprocessor``), load the checkpoint strictly with rep_mm's safe loader, convert EVERY
re-param block (:func:`rep_mm.reparameterize` on the whole model, so necks and heads too),
save, export with ``mmdeploy.apis.torch2onnx``, run onnxruntime and compare.

What is compared: the graph's outputs (after mmdeploy's rewrites: softmax scores for
classifiers, logits for segmentors with ``with_argmax=False``, ``dets``/``labels`` after NMS for
detectors) with the same forward in PyTorch eager mode inside mmdeploy's ``RewriterContext``,
for the converted model (export error) and for the training-form model (end-to-end error, the
one held against ``tolerance``). Errors are ``max |a - b|`` and ``max |a - b| / max |a|`` over all
outputs. Detectors: the boxes after NMS are compared when both sides keep the same boxes with
the same labels; the raw head outputs before NMS are always compared too (``pre_nms``), since a
near-tie at the score threshold can change the kept boxes. Checks live in
:mod:`rep_mm.onnx_checks`.

Graph checks: no ``BatchNormalization`` node, and every fused block maps to exactly one ``Conv``
node (node scopes of the TorchScript exporter name the module path).
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .onnx_checks import compare_outputs, compare_pre_nms, graph_checks, rewritten_forward
from .registry import MODELS

__all__ = ['DeployError', 'ExportFailed', 'export', 'build_reparameterized_model',
           'deploy_config_for',
           'DEPLOY_CONFIG_DIR', 'TASKS', 'main']

DEPLOY_CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs' / 'deploy'
# codebase -> (task name, deploy config shipped in configs/deploy)
TASKS = {
    'mmpretrain': ('classification', 'classification_onnxruntime_static.py'),
    'mmseg': ('segmentation', 'segmentation_onnxruntime_static.py'),
    'mmdet': ('detection', 'detection_onnxruntime_static.py'),
}
WORK_DIR_OUTPUTS = ('converted.pth', 'deploy_model.py', 'deploy_cfg.py', 'end2end.onnx',
                    'end2end.onnx.data', 'input.png', 'deploy.json', 'pipeline.json',
                    'detail.json', 'report.json')
DEFAULT_TOLERANCE = 1e-4


class DeployError(ValueError):
    """Bad input (missing file, unknown task, work dir that would overwrite something)."""


class ExportFailed(RuntimeError):
    """mmdeploy / torch.onnx could not export the model (the message says why)."""


# ------------------------------------------------------------------------- the deploy model
@MODELS.register_module(name='ReparameterizedModel')
def build_reparameterized_model(model_type: str, **kwargs: Any) -> nn.Module:
    """Build ``dict(type=model_type, **kwargs)`` and fold all its re-param blocks.

    The model config of a converted checkpoint: ``dict(type='rep_mm.ReparameterizedModel',
    model_type='mmdet.RetinaNet', backbone=..., ...)``. All other keys stay where the toolbox
    and mmdeploy read them (``decode_head``, ``test_cfg``, ``data_preprocessor`` ...), and the
    built module has exactly the keys of ``converted.pth``.
    """
    from mmengine.registry import MODELS as ROOT_MODELS
    if '.' not in model_type:
        raise DeployError(f'model_type must name its scope (e.g. "mmdet.RetinaNet"), '
                          f'got {model_type!r}')
    from .reparam import reparameterize
    model = ROOT_MODELS.build(dict(type=model_type, **kwargs))
    reparameterize(model)
    return model


def deploy_model_config(model_cfg: Dict[str, Any], default_scope: Optional[str]) -> Dict[str, Any]:
    """``cfg.model`` rewritten to build the deploy form (:func:`build_reparameterized_model`)."""
    model_cfg = copy.deepcopy(dict(model_cfg))
    model_type = model_cfg.pop('type')
    if not isinstance(model_type, str):
        raise DeployError(f'cfg.model.type must be a registered name, got {model_type!r}')
    if '.' not in model_type:
        if not default_scope:
            raise DeployError(f'cfg.model.type {model_type!r} has no scope and the config '
                              f'sets no default_scope; write e.g. "mmdet.{model_type}"')
        model_type = f'{default_scope}.{model_type}'
    return dict(type='rep_mm.ReparameterizedModel', model_type=model_type, **model_cfg)


# ------------------------------------------------------------------------------- the report
@dataclass
class ExportReport:
    """What :func:`export` measured; ``to_dict()`` is written to ``report.json``."""

    task: str
    work_dir: str
    passed: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    data: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dict(task=self.task, passed=self.passed, tolerance=self.tolerance,
                    work_dir=self.work_dir, **self.data)


# --------------------------------------------------------------------------------- helpers
def deploy_config_for(codebase: str) -> Path:
    """The shipped onnxruntime static deploy config of a codebase (mmpretrain/mmseg/mmdet)."""
    if codebase not in TASKS:
        raise DeployError(f'no deploy config for codebase {codebase!r}; supported: '
                          f'{", ".join(TASKS)}')
    return DEPLOY_CONFIG_DIR / TASKS[codebase][1]


def codebase_of(model: nn.Module) -> str:
    """``mmpretrain`` / ``mmseg`` / ``mmdet``: the toolbox whose model class ``model`` is."""
    for cls in type(model).__mro__:
        root = cls.__module__.split('.')[0]
        if root in TASKS:
            return root
    raise DeployError(f'{type(model).__name__} is not an mmpretrain classifier, mmseg '
                      f'segmentor or mmdet detector; rep-mm export supports those three')


@contextlib.contextmanager
def onnx_exporter(dynamo: bool) -> Iterator[None]:
    """Make ``torch.onnx.export`` (called by mmdeploy without ``dynamo``) use ``dynamo``."""
    original = torch.onnx.export

    def export_with(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault('dynamo', dynamo)
        return original(*args, **kwargs)

    torch.onnx.export = export_with
    try:
        yield
    finally:
        torch.onnx.export = original


def _check_inputs(config: str, checkpoint: Optional[str], random_init: bool,
                  image: Optional[str], work_dir: Path, overwrite: bool) -> None:
    if not os.path.isfile(config):
        raise DeployError(f'config {config!r} does not exist (give an mmpretrain, mmseg or '
                          f'mmdet config that uses rep_mm)')
    if checkpoint is None and not random_init:
        raise DeployError('give a checkpoint (training-form or converted), or --random-init '
                          'for a smoke export with random weights')
    if checkpoint is not None and random_init:
        raise DeployError('give either a checkpoint or --random-init, not both')
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise DeployError(f'checkpoint {checkpoint!r} does not exist')
    if image is not None and not os.path.isfile(image):
        raise DeployError(f'image {image!r} does not exist')
    if work_dir.exists() and not work_dir.is_dir():
        raise DeployError(f'work dir {str(work_dir)!r} exists and is not a directory')
    inputs = [p for p in (config, checkpoint, image) if p is not None]
    for name in WORK_DIR_OUTPUTS:
        target = work_dir / name
        for path in inputs:
            if os.path.realpath(path) == os.path.realpath(target):
                raise DeployError(f'input {path!r} lies in the work dir as {name}, which '
                                  f'export writes; choose another work dir')
        if target.exists() and not overwrite:
            raise DeployError(f'work dir {str(work_dir)!r} already holds {name}; choose an '
                              f'empty work dir or pass --overwrite')


def sample_image(codebase: str, out: Path, seed: int = 0) -> Path:
    """A real test image written to ``out``: the first held-out handwritten digit of
    rep_mm.datasets.digits' split (classification, 32x32), or the first val scene of
    rep_mm.datasets.digit_scenes (segmentation, detection; 64x64)."""
    import tempfile
    if codebase == 'mmpretrain':
        # one image of the tree prepare_digits writes (same split, same encoding)
        from .datasets.digits import _encode_png, _load, _split
        images, labels = _load()
        index = int(_split(labels, seed, 360)['test'][0])
        out.write_bytes(_encode_png(images[index], 32))
        return out
    from .datasets import prepare_digit_scenes
    with tempfile.TemporaryDirectory(prefix='rep_mm_sample_') as tmp:
        prepare_digit_scenes(Path(tmp) / 'scenes', num_train=1, num_val=1, size=64, seed=seed)
        shutil.copyfile(Path(tmp) / 'scenes' / 'images' / 'val' / '00000.png', out)
    return out


# ---------------------------------------------------------------------------------- export
class _Progress:
    """Named steps with a rich progress bar on a terminal (plain lines otherwise)."""

    def __init__(self, steps: Sequence[str], quiet: bool = False) -> None:
        self.steps, self.quiet, self.index = list(steps), quiet, 0
        self.started = time.perf_counter()
        self.timings: Dict[str, float] = {}
        self._progress = self._task = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import Progress
            self._progress = Progress(transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.steps[0], total=len(self.steps))

    def step(self, name: str) -> None:
        now = time.perf_counter()
        if self.index:
            self.timings[self.steps[self.index - 1]] = round(now - self.started, 3)
        self.started, self.index = now, self.index + 1
        if self._progress is not None:
            self._progress.update(self._task, description=name, completed=self.index - 1)
        elif not self.quiet:
            print(f'[{self.index}/{len(self.steps)}] {name}', file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.index:
            self.timings[self.steps[self.index - 1]] = round(time.perf_counter() -
                                                             self.started, 3)
        if self._progress is not None:
            self._progress.stop()


STEPS = ('build model', 'load weights', 'prepare input', 'convert blocks',
         'save converted checkpoint',
         'export ONNX (mmdeploy torch2onnx)', 'run onnxruntime', 'compare + check graph',
         'write SDK meta')


def _load_into(model: nn.Module, checkpoint: str, allow_unsafe: bool) -> Tuple[str, List[str]]:
    """Load a training-form checkpoint, or a converted one (then the model is folded first).

    Returns the form (``'training'`` / ``'deploy'``) and notes.
    """
    from .checkpoint import (CheckpointError, extract_state_dict, load_checkpoint_file,
                             load_weights)
    from .reparam import reparameterize
    state = extract_state_dict(load_checkpoint_file(checkpoint, allow_unsafe))
    try:
        report = load_weights(model, state, kind='rep_mm', strict=True, target='model')
        return 'training', [report.summary()]
    except CheckpointError as training_error:
        folded = copy.deepcopy(model)
        reparameterize(folded)
        try:
            report = load_weights(folded, state, kind='rep_mm', strict=True, target='model')
        except CheckpointError:
            raise DeployError(f'checkpoint {checkpoint!r} fits neither the training form nor '
                              f'the converted form of the model:\n{training_error}')
        reparameterize(model)
        model.load_state_dict(folded.state_dict())
        return 'deploy', [report.summary()]


def export(config: str, work_dir: str, checkpoint: Optional[str] = None,
           random_init: bool = False, image: Optional[str] = None,
           deploy_config: Optional[str] = None, tolerance: float = DEFAULT_TOLERANCE,
           overwrite: bool = False, unsafe_load: bool = False, seed: int = 0,
           sdk: bool = True, quiet: bool = False) -> ExportReport:
    """Convert, export through mmdeploy, run in onnxruntime, compare; see the module docstring.

    Args:
        config: mm config (mmpretrain classifier, mmseg segmentor or mmdet detector).
        work_dir: output directory (created; existing outputs are kept unless ``overwrite``).
        checkpoint: training-form or converted checkpoint (loaded with ``weights_only=True``
            and the Runner allow-list unless ``unsafe_load``).
        random_init: no checkpoint: random weights with randomised BN statistics (``seed``).
        image: input image; default a real digit / digit scene from rep_mm.datasets.
        deploy_config: mmdeploy deploy config; default the shipped one of the task.
        tolerance: max relative error (ONNX vs training-form PyTorch) to pass.
        sdk: also write mmdeploy SDK meta (``export2SDK``).

    Returns:
        ExportReport (``passed`` tells whether the end-to-end error is within ``tolerance``).

    Raises:
        DeployError: bad inputs (nothing is overwritten).
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    work = Path(work_dir).expanduser().absolute()
    _check_inputs(config, checkpoint, random_init, image, work, overwrite)
    if not (tolerance > 0):
        raise DeployError(f'tolerance must be > 0, got {tolerance!r}')
    progress = _Progress(STEPS, quiet)
    try:
        progress.step(STEPS[0])
        cfg = Config.fromfile(config)
        if 'model' not in cfg:
            raise DeployError(f'config {config!r} has no `model` field')
        if cfg.get('default_scope'):
            init_default_scope(cfg.default_scope)
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.pop('pretrained', None)
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.get('data_preprocessor', {})))
        from mmengine.model import revert_sync_batchnorm
        from mmengine.registry import MODELS as ROOT_MODELS
        torch.manual_seed(seed)
        model = revert_sync_batchnorm(ROOT_MODELS.build(model_cfg))
        codebase = codebase_of(model)
        task = TASKS[codebase][0]
        deploy_path = Path(deploy_config) if deploy_config else deploy_config_for(codebase)
        if not deploy_path.is_file():
            raise DeployError(f'deploy config {str(deploy_path)!r} does not exist')
        deploy_cfg = Config.fromfile(str(deploy_path))
        dynamo = bool(deploy_cfg.onnx_config.get('dynamo', False))
        report = ExportReport(task=task, work_dir=str(work), tolerance=tolerance)
        data = report.data
        data.update(config=os.path.abspath(config), codebase=codebase,
                    deploy_config=str(deploy_path.resolve()),
                    exporter=('dynamo' if dynamo else 'torchscript'),
                    opset=deploy_cfg.onnx_config.get('opset_version', 11))

        progress.step(STEPS[1])
        if random_init:
            from .testing import randomize_bn_statistics
            randomize_bn_statistics(model, seed)
            form, notes = 'training', [f'random weights (seed {seed}), BN statistics randomised']
        else:
            form, notes = _load_into(model, checkpoint, unsafe_load)
        data.update(checkpoint=os.path.abspath(checkpoint) if checkpoint else None,
                    checkpoint_form=form, load=notes)
        model.eval()

        progress.step('prepare input')
        work.mkdir(parents=True, exist_ok=True)
        image_path = work / 'input.png'
        if image is None:
            sample_image(codebase, image_path, seed)
        else:
            shutil.copyfile(image, image_path)
        data['image'] = dict(path=str(image_path), source=image or 'rep_mm.datasets')

        from mmdeploy.apis import build_task_processor
        from mmdeploy.utils import get_input_shape
        deploy_model_cfg = cfg.copy()
        deploy_model_cfg.model = deploy_model_config(cfg.model, cfg.get('default_scope'))
        # the builder registers on import of rep_mm.deploy: let the saved config import it
        imports = dict(deploy_model_cfg.get('custom_imports') or dict(imports=[]))
        imports['imports'] = list(imports.get('imports', [])) + ['rep_mm', 'rep_mm.deploy']
        imports['imports'] = list(dict.fromkeys(imports['imports']))
        imports.setdefault('allow_failed_imports', False)
        deploy_model_cfg.custom_imports = imports
        data['resize_added'] = _ensure_resize(deploy_model_cfg, codebase, deploy_cfg)
        processor = build_task_processor(deploy_model_cfg, deploy_cfg, 'cpu')
        input_data, inputs = processor.create_input(str(image_path), get_input_shape(deploy_cfg),
                                                    data_preprocessor=model.data_preprocessor)
        inputs = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        samples = input_data['data_samples']
        data['input_shape'] = list(inputs.shape)

        progress.step('convert blocks')
        from .reparam import reparameterize
        training_form = copy.deepcopy(model) if form == 'training' else None
        start = time.perf_counter()
        rep = reparameterize(model)
        data['convert_seconds'] = time.perf_counter() - start
        fused = rep.converted + rep.already_deployed
        data['blocks'] = dict(converted=len(rep.converted),
                              already_deployed=len(rep.already_deployed))

        progress.step('save converted checkpoint')
        from . import __version__
        meta = dict(config=os.path.abspath(config), deploy=True,
                    source_checkpoint=data['checkpoint'],
                    converted_blocks=len(fused), rep_mm_version=__version__,
                    time=datetime.datetime.now().isoformat(timespec='seconds'))
        converted = work / 'converted.pth'
        save_path = _save(dict(state_dict=model.state_dict(), meta=meta), converted, overwrite)
        deploy_model_cfg.dump(str(work / 'deploy_model.py'))
        deploy_cfg.dump(str(work / 'deploy_cfg.py'))

        progress.step('export ONNX (mmdeploy torch2onnx)')
        from mmdeploy.apis import torch2onnx
        onnx_name = deploy_cfg.onnx_config.save_file
        for stale in (work / onnx_name, work / f'{onnx_name}.data'):
            if stale.exists():  # only with overwrite (checked above)
                stale.unlink()
        start = time.perf_counter()
        try:
            with onnx_exporter(dynamo), warnings.catch_warnings():
                # the tracer's notes on mmdeploy's shape arithmetic: expected, static shapes
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                torch2onnx(str(image_path), str(work), onnx_name, deploy_cfg,
                           deploy_model_cfg, model_checkpoint=save_path, device='cpu')
        except Exception as error:  # noqa: BLE001 - re-raised with what was tried
            first = str(error).strip().splitlines()[0] if str(error).strip() else ''
            raise ExportFailed(
                f'mmdeploy torch2onnx failed with the {data["exporter"]} exporter (opset '
                f'{data["opset"]}): {type(error).__name__}: {first}. The shipped deploy '
                f'configs use the TorchScript exporter (dynamo=False, opset 11), which works '
                f'for classifiers, segmentors and detectors; see docs/deploy.md') from error
        data['export_seconds'] = time.perf_counter() - start
        onnx_path = work / onnx_name
        data['onnx'] = dict(path=str(onnx_path), bytes=onnx_path.stat().st_size)

        progress.step('run onnxruntime')
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_path), options,
                                       providers=['CPUExecutionProvider'])
        feed = {session.get_inputs()[0].name: inputs.detach().cpu().numpy()}
        onnx_outputs = session.run(None, feed)
        data['outputs'] = {o.name: list(v.shape) for o, v in zip(session.get_outputs(),
                                                                  onnx_outputs)}

        progress.step('compare + check graph')
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
        data['comparisons'] = comparisons
        data['graph'] = graph_checks(onnx_path, fused)
        key = 'onnx_vs_training_form' if training_form is not None else 'onnx_vs_converted'
        data['checked'] = key
        final = comparisons[key]
        graph = data['graph']
        failures = []
        pre_nms_ok = (codebase == 'mmdet' and comparisons['pre_nms']['comparable'] and
                      comparisons['pre_nms']['max_rel'] <= tolerance)
        if not final['comparable'] and pre_nms_ok:
            # a score on the NMS threshold flips a box; the graph itself computes the same
            data['note'] = (f'{key}: {final["note"]}; the raw head outputs before NMS agree, '
                            f'so this is a threshold tie, not a parity failure')
        elif not final['comparable']:
            failures.append(final['note'])
        elif final['max_rel'] > tolerance:
            failures.append(f'{key}: max rel error {final["max_rel"]:.3g} > {tolerance:g}')
        if graph['batch_norm_nodes']:
            failures.append(f'{graph["batch_norm_nodes"]} BatchNormalization node(s) in graph')
        if graph['scopes_named'] and graph['blocks_not_one_conv']:
            failures.append(f'{len(graph["blocks_not_one_conv"])} fused block(s) without '
                            f'exactly one Conv node')
        pre_nms = comparisons.get('pre_nms')
        if pre_nms is not None and pre_nms['comparable'] and pre_nms['max_rel'] > tolerance:
            failures.append(f'pre-NMS head outputs: max rel error '
                            f'{pre_nms["max_rel"]:.3g} > {tolerance:g}')
        report.passed = not failures
        data['failures'] = failures

        progress.step('write SDK meta')
        data['sdk'] = _write_sdk(sdk, work, deploy_cfg, deploy_model_cfg, save_path)
    finally:
        progress.close()
    data['seconds'] = progress.timings
    data['versions'] = _versions()
    data['threads'] = torch.get_num_threads()
    from .demo_utils import write_json_atomic
    write_json_atomic(report.to_dict(), str(work / 'report.json'))
    return report


def _ensure_resize(model_cfg: Any, codebase: str, deploy_cfg: Any) -> bool:
    """Segmentors: put a ``Resize`` to the static input shape into ``test_pipeline``.

    mmdeploy resizes to the deploy config's ``input_shape`` only by rewriting an existing
    ``Resize``, and its SDK meta for mmseg asserts one as the second transform; without it the
    graph's static shape would be the one of the sample image. Returns True if one was added.
    """
    from mmdeploy.utils import get_input_shape
    shape = get_input_shape(deploy_cfg)
    pipeline = model_cfg.get('test_pipeline')
    if codebase != 'mmseg' or shape is None or not pipeline:
        return False
    if any(step.get('type') == 'Resize' for step in pipeline):
        return False
    # mmdeploy's input_shape is [W, H]; mmcv's Resize takes scale=(W, H)
    pipeline.insert(1, dict(type='Resize', scale=tuple(shape), keep_ratio=False))
    model_cfg.test_pipeline = pipeline
    return True


def _save(obj: Dict[str, Any], path: Path, overwrite: bool) -> str:
    from .checkpoint import save_checkpoint_atomic
    return save_checkpoint_atomic(obj, path, overwrite=overwrite)


def _write_sdk(enabled: bool, work: Path, deploy_cfg: Any, model_cfg: Any,
               checkpoint: str) -> Dict[str, Any]:
    """mmdeploy SDK meta (deploy.json, pipeline.json, detail.json) via ``export2SDK``."""
    if not enabled:
        return dict(written=False, note='skipped (--no-sdk)')
    try:
        from mmdeploy.backend.sdk.export_info import export2SDK
        export2SDK(deploy_cfg, model_cfg, str(work), pth=checkpoint, device='cpu')
    except Exception as error:  # noqa: BLE001 - reported, the export itself is fine
        return dict(written=False, note=f'export2SDK failed: {type(error).__name__}: {error}')
    files = [name for name in ('deploy.json', 'pipeline.json', 'detail.json')
             if (work / name).is_file()]
    # mmdeploy names the model after cfg.model.type: give the real one, not the builder's
    meta_path = work / 'deploy.json'
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        real_name = model_cfg.model.model_type.split('.')[-1].lower()
        for entry in meta.get('models', []):
            if entry.get('name') == 'rep_mm.reparameterizedmodel':
                entry['name'] = real_name
        meta_path.write_text(json.dumps(meta, indent=4) + '\n')
    return dict(written=len(files) == 3, files=files, note='')


def _versions() -> Dict[str, str]:
    import importlib.metadata as metadata
    out = {}
    for name in ('torch', 'mmengine', 'mmcv', 'mmpretrain', 'mmsegmentation', 'mmdet',
                 'mmdeploy', 'onnx', 'onnxruntime'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------------- CLI
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog='rep-mm export',
        description='Convert every re-param block, export ONNX through mmdeploy, run it in '
                    'onnxruntime on a real image and compare with PyTorch. Exit codes: 0 '
                    'pass, 1 error or graph check beyond the limits, 2 bad input.')
    parser.add_argument('config', help='mmpretrain / mmseg / mmdet config using rep_mm')
    parser.add_argument('checkpoint', nargs='?',
                        help='training-form or converted checkpoint (omit with --random-init)')
    parser.add_argument('--work-dir', required=True,
                        help='output directory (ONNX, converted.pth, SDK meta, report.json)')
    parser.add_argument('--random-init', action='store_true',
                        help='no checkpoint: random weights, randomised BN statistics (smoke)')
    parser.add_argument('--image', help='input image (default: a digit / digit scene made by '
                                        'rep_mm.datasets)')
    parser.add_argument('--deploy-config',
                        help='mmdeploy deploy config (default: configs/deploy/<task>_'
                             'onnxruntime_static.py)')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='max relative error ONNX vs PyTorch, max|a-b|/max|a| '
                             f'(default {DEFAULT_TOLERANCE:g})')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace outputs of an earlier export in the work dir')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the checkpoint fully (weights_only=False): trusted only')
    parser.add_argument('--seed', type=int, default=0, help='seed of --random-init and image')
    parser.add_argument('--no-sdk', action='store_true', help='skip mmdeploy SDK meta')
    parser.add_argument('--quiet', action='store_true', help='no progress output')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``rep-mm export`` / ``tools/deploy.py``: returns the exit code."""
    from .checkpoint import CheckpointError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, usage errors
        return int(exit_.code or 0)
    try:
        report = export(args.config, args.work_dir, checkpoint=args.checkpoint,
                        random_init=args.random_init, image=args.image,
                        deploy_config=args.deploy_config, tolerance=args.tolerance,
                        overwrite=args.overwrite, unsafe_load=args.unsafe_load, seed=args.seed,
                        sdk=not args.no_sdk, quiet=args.quiet)
    except (DeployError, CheckpointError, FileExistsError) as error:
        print(f'rep-mm export: error: {error}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportFailed as error:
        print(f'rep-mm export: FAIL: {error}', file=sys.stderr)
        return EXIT_FAILED
    data = report.data
    graph = data['graph']
    print(f'{report.task}: {data["blocks"]["converted"]} block(s) converted, '
          f'{data["blocks"]["already_deployed"]} already in deploy form; '
          f'{data["exporter"]} exporter, opset {data["opset"]}; input {data["input_shape"]}')
    for name, result in data['comparisons'].items():
        if result.get('comparable'):
            print(f'  {name}: max abs {result["max_abs"]:.3g}, max rel {result["max_rel"]:.3g}')
        else:
            print(f'  {name}: not comparable ({result["note"]})')
    per_block = (f'{graph["blocks_with_one_conv"]}/{graph["fused_blocks"]} fused blocks have '
                 f'exactly one Conv' if graph['scopes_named'] else graph['note'])
    print(f'  graph: {graph["nodes"]} nodes, {graph["batch_norm_nodes"]} BatchNormalization, '
          f'{graph["conv_nodes"]} Conv; {per_block}')
    print(f'  SDK meta: {"written" if data["sdk"]["written"] else data["sdk"]["note"]}')
    print(f'  work dir: {report.work_dir} (report.json)')
    if report.passed:
        print(f'PASS ({data["checked"]} within {report.tolerance:g})')
        return EXIT_OK
    for failure in data['failures']:
        print(f'FAIL: {failure}')
    return EXIT_FAILED


if __name__ == '__main__':
    sys.exit(main())
