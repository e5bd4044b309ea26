"""mmengine integration of the QAT flows: the ``rep_mm.QATModel`` model type, ``rep_mm.QATHook``
and the deploy-form checkpoint written after training.

A config wraps a stock model config (mmpretrain classifier, mmseg segmentor ...)::

    model = dict(type='rep_mm.QATModel', flow='after_conversion',   # or 'equivalent_kernel'
                 fake_quant=True, weight_quant='per_channel',       # or 'per_tensor'
                 model=dict(type='ImageClassifier', backbone=dict(
                     type='rep_mm.RepVGG', ..., deploy=True), ...))
    custom_hooks = [dict(type='rep_mm.QATHook', calib_batches=8)]

``QATModel`` builds the inner model and prepares it in place (it returns the inner model
itself, so the Runner, data preprocessor and state-dict names are those of the stock model):

* ``flow='after_conversion'`` (A, :mod:`.insert_bn`): the inner config must be the deploy form;
  every fused conv gets an inserted BN (``fake_quant=False``: floating-point fine-tuning of a
  deploy-form checkpoint).
* ``flow='equivalent_kernel'`` (B, :mod:`.eqk`): the inner config must be the training form.

``QATHook``:

* ``after_load_checkpoint`` (``load_from``): a training-form checkpoint given to flow A is
  converted (a training-form twin of the inner model is built, loaded strictly and
  re-parameterized); a deploy-form one given to flow B is refused; the QAT-only entries
  (inserted BN, quantizer ranges) missing from a stock checkpoint are taken from the model, so
  that it loads without missing keys.
* ``before_train``: flow A measures the inserted BNs' statistics on ``calib_batches`` batches of
  the train dataloader (unless resumed calibrated) and checks the exactness (<= 1e-5).
* ``after_train``: writes ``<work_dir>/qat_deploy.pth`` atomically (tagged
  ``meta['rep_mm_form'] = 'deploy'``), a plain deploy-form checkpoint (BN
  folded / blocks converted, quantizers removed) that loads with ``strict=True`` into the inner
  config with ``deploy=True``; the fold is checked in fp32 on a training batch (<= 1e-5).
"""
import copy
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from torch import nn

from ...integrations import build_model, unwrap_model
from ...registry import HOOKS, MODELS
from ...reparam import reparameterize
from .eqk import eqk_blocks, prepare_eqk_qat, strip_eqk_qat
from .errors import QATError
from .fake_quant import WEIGHT_GRANULARITIES, ActivationQuantizer
from .insert_bn import (BNConv2d, calibrate_inserted_bn, fold_bn, inserted_bn_modules,
                        prepare_insert_bn)
from .utils import fake_quant_disabled, output_errors

__all__ = ['FLOWS', 'QATModel', 'QATHook', 'deploy_state_dict', 'with_deploy', 'fold_checkpoint',
           'save_deploy_checkpoint', 'DEPLOY_CHECKPOINT']

FLOWS = ('after_conversion', 'equivalent_kernel')
DEPLOY_CHECKPOINT = 'qat_deploy.pth'


def with_deploy(cfg: Any, deploy: bool) -> Any:
    """A deep copy of a model config with every ``deploy`` key set to ``deploy``; if there is
    none, ``backbone.deploy`` is added (rep_mm backbones take it)."""
    cfg = copy.deepcopy(cfg)
    found = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if 'deploy' in node:
                node['deploy'] = deploy
                found.append(node)
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg)
    if not found and deploy:
        if not isinstance(cfg.get('backbone'), dict):
            raise QATError('cannot make the deploy-form config: it has no `deploy` key and no '
                           '`backbone` dict; set deploy=True where the blocks are built')
        cfg['backbone']['deploy'] = True
    return cfg


def _build(model_cfg: Any) -> nn.Module:
    """Build a model config in the current default scope (the Runner's, inside a run)."""
    return build_model({}, model_cfg)


@MODELS.register_module(name='QATModel')
def QATModel(model: dict, flow: str = 'after_conversion', fake_quant: bool = True,
             averaging_constant: float = 0.01, bn_momentum: float = 0.1,
             bn_stats: str = 'batch', update_bn_stats: bool = True,
             weight_quant: str = 'per_channel',
             data_preprocessor: Optional[dict] = None) -> nn.Module:
    """Build ``model`` (a stock model config) and prepare it for QAT in place (module
    docstring); returns the inner model with ``qat_config`` (dict) attached.

    Args:
        model (dict): the inner model config; deploy form for flow A, training form for B.
        flow (str): ``'after_conversion'`` (A) or ``'equivalent_kernel'`` (B).
        fake_quant (bool): fake-quantize (False: floating-point fine-tuning; flow A only).
        averaging_constant (float): EMA constant of the activation ranges.
        bn_momentum (float): momentum of the inserted BNs (A).
        bn_stats (str): ``'batch'`` or ``'running'`` statistics folded in training (A).
        update_bn_stats (bool): keep updating the branches' BN statistics (B).
        weight_quant (str): int8 weight scales, ``'per_channel'`` (default; ``rep-mm
            quantize``'s default) or ``'per_tensor'`` (to match ``rep-mm quantize
            --per-tensor``).
        data_preprocessor (dict, optional): given to the inner model unless it has one (the
            Runner passes the config's top-level ``data_preprocessor`` here).
    """
    if flow not in FLOWS:
        raise QATError(f'QATModel: flow must be one of {FLOWS}, got {flow!r}')
    if not isinstance(fake_quant, bool):
        raise QATError(f'QATModel: fake_quant must be True or False, got {fake_quant!r}')
    if weight_quant not in WEIGHT_GRANULARITIES:
        raise QATError(f'QATModel: weight_quant must be one of {WEIGHT_GRANULARITIES}, got '
                       f'{weight_quant!r}')
    if flow == 'equivalent_kernel' and not fake_quant:
        raise QATError('QATModel: flow equivalent_kernel without fake_quant is plain training; '
                       'use the stock config instead')
    if not isinstance(model, dict) or 'type' not in model:
        raise QATError(f'QATModel: model must be a model config dict with a type, got '
                       f'{type(model).__name__}')
    model = copy.deepcopy(model)
    if data_preprocessor is not None:
        model.setdefault('data_preprocessor', data_preprocessor)
    built = _build(model)
    if flow == 'after_conversion':
        try:
            names = prepare_insert_bn(built, fake_quant=fake_quant, momentum=bn_momentum,
                                      averaging_constant=averaging_constant, bn_stats=bn_stats,
                                      weight_quant=weight_quant)
        except QATError as error:
            raise QATError(f'QATModel(flow=after_conversion): {error}. The inner `model` must '
                           f'be the deploy-form config (e.g. backbone.deploy=True); load_from '
                           f'may be a training-form or converted checkpoint') from None
        covered: Dict[str, List[str]] = dict(covered=names, uncovered=[])
    else:
        try:
            covered = prepare_eqk_qat(built, averaging_constant=averaging_constant,
                                      update_bn_stats=update_bn_stats,
                                      weight_quant=weight_quant)
        except QATError as error:
            raise QATError(f'QATModel(flow=equivalent_kernel): {error}') from None
    built.qat_config = dict(flow=flow, fake_quant=fake_quant, weight_quant=weight_quant,
                            source=copy.deepcopy(model), **covered)
    return built


def _qat_only_keys(model: nn.Module) -> List[str]:
    """State-dict keys that exist only under QAT (inserted BN, calibration flag, ranges)."""
    prefixes = []
    for name, module in model.named_modules():
        if isinstance(module, BNConv2d):
            prefixes += [f'{name}.bn.', f'{name}.bn_calibrated']
        elif isinstance(module, ActivationQuantizer):
            prefixes.append(f'{name}.')
    return [k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)]


def forward_tensor(model: nn.Module, data: Any) -> Any:
    """Raw outputs of an mm model on preprocessed data (as ReparameterizeHook compares)."""
    from ...hooks.reparameterize_hook import forward_tensor as mm_forward_tensor
    return mm_forward_tensor(model, data)


@torch.no_grad()
def deploy_state_dict(model: nn.Module, check_input: Any = None, forward=forward_tensor,
                      tolerance: float = 1e-5) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The plain deploy-form state dict of a QAT model (flow A: BN folded; flow B: blocks
    converted; quantizers removed), from a deep copy (``model`` is unchanged).

    With ``check_input`` the copy before (eval mode, fake quantization off) and after folding
    are compared on it: ``max |a - b| / max |a| <= tolerance`` or :class:`QATError`.

    Returns:
        (state_dict, info) with info ``folded`` (paths) and ``max_rel_error`` (or None).
    """
    work = copy.deepcopy(unwrap_model(model)).eval()
    reference = None
    if check_input is not None:
        with fake_quant_disabled(work):
            reference = forward(work, check_input)
    if inserted_bn_modules(work):
        folded = fold_bn(work)
    elif eqk_blocks(work):
        reparameterize(work)
        folded = strip_eqk_qat(work)
    else:
        raise QATError('deploy_state_dict: the model has no QAT module (inserted BN or '
                       'equivalent-kernel QAT block)')
    info: Dict[str, Any] = dict(folded=folded, max_rel_error=None)
    if reference is not None:
        max_abs, max_rel = output_errors(reference, forward(work, check_input))
        info.update(max_abs_error=max_abs, max_rel_error=max_rel)
        if not max_rel <= tolerance:
            raise QATError(f'folding the QAT model changed its fp32 outputs: max |a - b| / '
                           f'max |a| = {max_rel:.3g} > {tolerance:g}')
    return work.state_dict(), info


def _train_batches(runner: Any, model: nn.Module, count: int) -> List[Any]:
    """``count`` preprocessed batches of the train set (its train pipeline and collate, the
    loader's batch size), drawn in a seeded random order by a loader of their own.

    Not by iterating ``runner.train_dataloader``: with an ``InfiniteSampler`` (iteration-based
    configs) that would close the sampler's one index generator, which the train loop shares,
    and training would stop with ``StopIteration``."""
    from mmengine.dist import get_rank
    from torch.utils.data import DataLoader, RandomSampler
    loader = runner.train_dataloader
    seed = (getattr(runner, 'seed', None) or 0) + get_rank()
    sampler = RandomSampler(loader.dataset, generator=torch.Generator().manual_seed(seed))
    calib_loader = DataLoader(loader.dataset, batch_size=loader.batch_size or 1,
                              sampler=sampler, collate_fn=loader.collate_fn, num_workers=0)
    batches = []
    for data in calib_loader:
        if len(batches) >= count:
            break
        batches.append(model.data_preprocessor(data, False))
    if not batches:
        raise QATError('QATHook: the train dataloader gave no batch to calibrate on')
    return batches


@HOOKS.register_module()
class QATHook(Hook):
    """Calibrate, adapt checkpoints and write the deploy-form result (module docstring).

    Args:
        calib_batches (int): training batches measured for the inserted BNs (A). Default 8.
        tolerance (float): exactness of insert-BN and of the fold. Default 1e-5.
        out_name (str): deploy-form checkpoint written in the work dir after training.
    """

    priority = 'HIGH'  # calibrate before any other before_train hook runs the model

    def __init__(self, calib_batches: int = 8, tolerance: float = 1e-5,
                 out_name: str = DEPLOY_CHECKPOINT) -> None:
        if isinstance(calib_batches, bool) or not isinstance(calib_batches, int) or \
                calib_batches < 1:
            raise QATError(f'QATHook: calib_batches must be a positive int, got '
                           f'{calib_batches!r}')
        if not tolerance > 0:
            raise QATError(f'QATHook: tolerance must be positive, got {tolerance!r}')
        self.calib_batches, self.tolerance, self.out_name = calib_batches, tolerance, out_name
        self.check_batch = None
        self.last_calibration: Optional[Dict[str, Any]] = None
        self.last_fold: Optional[Dict[str, Any]] = None

    @staticmethod
    def _config(runner: Any) -> Tuple[nn.Module, Dict[str, Any]]:
        model = unwrap_model(runner.model)
        cfg = getattr(model, 'qat_config', None)
        if cfg is None:
            raise QATError("QATHook needs a model built by type='rep_mm.QATModel'")
        return model, cfg

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        model, cfg = self._config(runner)
        state = checkpoint.get('state_dict', checkpoint)
        if state and all(k.startswith('module.') for k in state):
            for key in list(state):
                state[key[len('module.'):]] = state.pop(key)
        own = model.state_dict()
        qat_keys = set(_qat_only_keys(model))
        unknown = [k for k in state if k not in own]
        if cfg['flow'] == 'after_conversion' and unknown:
            twin = _build(with_deploy(cfg['source'], False))
            try:
                twin.load_state_dict(state, strict=True)
            except RuntimeError as error:
                raise QATError(f'QATHook: load_from is neither a converted checkpoint of this '
                               f'model nor a training-form one ({len(unknown)} unknown key(s), '
                               f'e.g. {unknown[0]}; as training form: '
                               f'{str(error).splitlines()[0]})') from None
            report = reparameterize(twin)
            state.clear()
            state.update(twin.state_dict())
            runner.logger.info(f'QATHook: converted the training-form checkpoint '
                               f'({len(report.converted)} block(s)) before inserting BN')
        elif cfg['flow'] == 'equivalent_kernel' and unknown:
            raise QATError(f'QATHook: equivalent-kernel QAT needs a training-form checkpoint; '
                           f'load_from has {len(unknown)} key(s) the training-form model lacks '
                           f'(e.g. {unknown[0]}); a converted checkpoint cannot be un-fused: '
                           f'use flow after_conversion for it')
        filled = [k for k in own if k in qat_keys and k not in state]
        for key in filled:
            state[key] = own[key].detach().clone()
        if filled:
            runner.logger.info(f'QATHook: {len(filled)} QAT-only entries (inserted BN / '
                               f'quantizer ranges) taken from the model: the checkpoint has '
                               f'none')

    def before_train(self, runner: Any) -> None:
        model, cfg = self._config(runner)
        batches = _train_batches(runner, model, self.calib_batches
                                 if cfg['flow'] == 'after_conversion' else 1)
        self.check_batch = batches[0]
        if cfg['flow'] == 'equivalent_kernel':
            runner.logger.info(f'QATHook: equivalent-kernel QAT of {len(cfg["covered"])} '
                               f'block(s); not covered (floating point): '
                               f'{cfg["uncovered"] or "none"}')
            return
        modules = inserted_bn_modules(model)
        if all(bool(m.bn_calibrated) for _, m in modules):
            runner.logger.info('QATHook: inserted BNs already calibrated (resumed)')
            return
        report = calibrate_inserted_bn(model, batches, forward_tensor, self.tolerance)
        self.last_calibration = report
        runner.logger.info(
            f'QATHook: inserted BN after {report["convs"]} fused conv(s), statistics measured '
            f'on {report["batches"]} training batch(es); converted vs converted+BN (fp32, '
            f'eval): max abs {report["max_abs_error"]:.3g}, max rel '
            f'{report["max_rel_error"]:.3g} (PASS at tolerance {self.tolerance:g})')

    def after_train(self, runner: Any) -> None:
        model, cfg = self._config(runner)
        state, info = deploy_state_dict(model, self.check_batch, tolerance=self.tolerance)
        self.last_fold = info
        if is_main_process():
            path = osp.join(runner.work_dir, self.out_name)
            source = getattr(runner, '_load_from', None)
            if source and osp.exists(path) and osp.exists(source) and osp.samefile(path,
                                                                                   source):
                root, ext = osp.splitext(path)
                path = f'{root}_iter_{runner.iter}{ext}'  # never replace the run's input
            save_deploy_checkpoint(state, cfg, path, overwrite=True)
            rel = info['max_rel_error']
            runner.logger.info(f'QATHook: deploy-form checkpoint {path} ({len(info["folded"])} '
                               f'module(s) folded; fp32 fold check max rel '
                               f'{rel if rel is None else f"{rel:.3g}"}); it loads into the '
                               f'model config with deploy=True')


def save_deploy_checkpoint(state: Dict[str, torch.Tensor], qat_config: Dict[str, Any],
                           path: str, overwrite: bool = False) -> str:
    """Write a folded QAT state dict atomically (:func:`rep_mm.io.save_checkpoint_atomic`) as
    ``{'state_dict', 'meta'}`` with ``meta['rep_mm_form'] = 'deploy'`` and the QAT settings;
    returns ``path``."""
    from ...io import save_checkpoint_atomic, tag_form
    meta = tag_form(dict(qat_flow=qat_config['flow'], fake_quant=qat_config['fake_quant'],
                         weight_quant=qat_config.get('weight_quant', 'per_channel')), 'deploy')
    return save_checkpoint_atomic(dict(state_dict=state, meta=meta), path, overwrite=overwrite)


def fold_checkpoint(config: str, checkpoint: str, out: str,
                    cfg_options: Optional[Dict[str, Any]] = None,
                    overwrite: bool = False) -> Dict[str, Any]:
    """Write the deploy-form checkpoint of a QAT training checkpoint (e.g. ``epoch_4.pth``
    of a ``rep_mm.QATModel`` config) to ``out`` atomically; returns the fold info.

    Raises:
        QATError: not a QATModel config, ``out`` is the input, or the checkpoint is not one of
            a QAT run.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from mmengine.config import Config

    from ...io import extract_state_dict, load_checkpoint_file
    if osp.exists(out) and osp.samefile(out, checkpoint):
        raise QATError(f'fold_checkpoint: the output {out!r} is the input checkpoint; write '
                       f'the deploy form to another file')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.model.get('type') not in ('rep_mm.QATModel', 'QATModel'):
        raise QATError(f'fold_checkpoint: {config} is not a rep_mm.QATModel config '
                       f'(model.type={cfg.model.get("type")!r})')
    model = build_model(cfg, default_scope='mmpretrain', with_data_preprocessor=True)
    model.load_state_dict(extract_state_dict(load_checkpoint_file(checkpoint)), strict=True)
    if any(not bool(m.bn_calibrated) for _, m in inserted_bn_modules(model)):
        raise QATError(f'fold_checkpoint: {checkpoint} has uncalibrated inserted BNs: it is '
                       f'not a checkpoint of a QAT training run')
    state, info = deploy_state_dict(model)
    info['out'] = save_deploy_checkpoint(state, model.qat_config, out, overwrite=overwrite)
    return info
