"""``ReparameterizeHook``: evaluate and test the deploy form of a model inside an mmengine Runner.

* **Validation during training** (``convert_before_val``): in ``before_val_epoch`` a converted
  deep copy of the model is made and ``runner.model.val_step`` (of the wrapper, if any) is
  redirected to it by an instance attribute; ``after_val_epoch`` removes that attribute. The
  modules, parameters and buffers of ``runner.model`` are never replaced or changed, so every
  checkpoint (``CheckpointHook`` saves in ``after_val_epoch`` and after training iterations /
  epochs) holds the training form whatever the hook priorities are, and training resumes on
  the untouched branches. (Swapping ``runner.model`` itself would tie the saved form to the
  order of this hook and CheckpointHook.)
* **Checkpoints** are tagged with the form of their weights (``meta['rep_mm_form']``,
  :func:`rep_mm.io.record_form`) in ``before_save_checkpoint``: ``'training'`` while training.
* **Test** (``convert_before_test``): training is over, so in ``before_test_epoch`` the model
  (``.module`` of a model wrapper) is converted in place. ``Runner.test()`` has already loaded
  the checkpoint by then (``load_or_resume`` runs before the test loop).
* **EMAHook**: it swaps the averaged weights into the model in ``before_{val,test}_epoch`` and
  back in ``after_*_epoch``. This hook must run after it in ``before_*_epoch`` (default priority
  ``LOW`` vs ``NORMAL``; checked in ``before_run``) so that the converted copy carries the EMA
  weights. At test time the EMA copy (``ema_hook.ema_model.module``) is converted in place too,
  so that the parameter-by-parameter swap-back still pairs the same tensors.
* **Verification** (``verify``): on the first batch of the loop, the training-form model and
  the converted one are run on the same preprocessed inputs (``mode='tensor'``, i.e. before
  any post-processing; features and RPN outputs for two-stage detectors) and ``max |a - b|``
  and ``max |a - b| / max |a|`` are logged
  (:mod:`rep_mm.verify.compare`: a NaN or infinity in either output is a failure, named with its
  tensor, count and first index, also when the training-form output itself is not finite).
* **Failures** (a failed check, or a block whose fused kernel would be NaN / inf or overflow
  the model's dtype) are logged as warnings, or raise ``RuntimeError`` with
  ``raise_on_failure=True``. A model that cannot be converted is not converted at all: the
  validation then runs on the training model itself, the test on the training form.

Usage in any mmpretrain / mmseg / mmdet config::

    custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
    custom_hooks = [dict(type='rep_mm.ReparameterizeHook', verify=True)]

Wrappers that keep the model as ``.module`` and call ``self.module.val_step`` (DDP,
``MMDistributedDataParallel``) are supported; sharded wrappers (FSDP, DeepSpeed) are not.
"""
import copy
from typing import Any, Dict, Optional, Sequence

import torch
from mmengine.hooks import EMAHook, Hook
from torch import nn

from ..integrations.mm_build import unwrap_model
from ..io import record_form
from ..registry import HOOKS
from ..reparam import (ReparamError, compare_model_outputs, conversion_problems,
                       default_tolerance, reparameterize)

__all__ = ['ReparameterizeHook', 'forward_tensor']

_MISSING = object()


def forward_tensor(model: nn.Module, data: Any) -> Any:
    """Raw network outputs (``mode='tensor'``) of an mm ``BaseModel`` on preprocessed data.

    Two-stage detectors are the exception: their ``mode='tensor'`` output is the RoI head run
    on the RPN's top-k / NMS-selected proposals, a discontinuous function of the features (a
    1e-7 change can swap two near-tied proposals). For them the features (backbone + neck) and
    the raw RPN head outputs are compared, which covers every re-param block rep_mm places in
    a detector; the RoI head itself has none.
    """
    if (hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')
            and hasattr(model, 'extract_feat') and isinstance(data, dict)):
        features = model.extract_feat(data['inputs'])
        return features, model.rpn_head(features)
    if isinstance(data, dict):
        return model(**data, mode='tensor')
    if isinstance(data, (list, tuple)):
        return model(*data, mode='tensor')
    return model(data, mode='tensor')


@HOOKS.register_module()
class ReparameterizeHook(Hook):
    """Validate a converted copy during training and test the model in its deploy form.

    Args:
        convert_before_val (bool): evaluate a converted deep copy in every validation; the
            training model and the saved checkpoints keep their training form. Default True.
        convert_before_test (bool): convert the model in place before the test loop.
            Default True.
        verify (bool): compare the training-form and the converted model on the first batch
            of each validation / test loop and log the errors. Default True.
        tolerance (float, optional): largest accepted relative error
            ``max |a - b| / max |a|``; default by parameter dtype: 1e-5 (float32),
            1e-10 (float64), 1e-2 (float16), 5e-2 (bfloat16).
        raise_on_failure (bool): raise ``RuntimeError`` when the verification fails, or the
            model cannot be converted, instead of logging a warning. Default False.

    Attributes:
        last_check (dict | None): the latest verification: ``phase`` ('val' | 'test'),
            ``max_abs_error``, ``max_rel_error`` (NaN when an output is not finite or the
            model could not be converted), ``tolerance``, ``passed``, ``failures`` (list of
            reasons, empty when passed), ``nonfinite`` (findings as dicts).
        last_report (ReparamReport | None): the latest conversion report.
    """

    priority = 'LOW'  # after EMAHook (NORMAL), before CheckpointHook (VERY_LOW)

    def __init__(self, convert_before_val: bool = True, convert_before_test: bool = True,
                 verify: bool = True, tolerance: Optional[float] = None,
                 raise_on_failure: bool = False) -> None:
        for name, value in (('convert_before_val', convert_before_val),
                            ('convert_before_test', convert_before_test),
                            ('verify', verify), ('raise_on_failure', raise_on_failure)):
            if not isinstance(value, bool):
                raise TypeError(f'ReparameterizeHook: {name} must be True or False, '
                                f'got {value!r} ({type(value).__name__})')
        if tolerance is not None and (isinstance(tolerance, bool) or
                                      not isinstance(tolerance, (int, float)) or
                                      not tolerance > 0):
            raise ValueError(f'ReparameterizeHook: tolerance must be a positive number or None '
                             f'(dtype default), got {tolerance!r}')
        self.convert_before_val = convert_before_val
        self.convert_before_test = convert_before_test
        self.verify = verify
        self.tolerance = None if tolerance is None else float(tolerance)
        self.raise_on_failure = raise_on_failure
        self.last_check: Optional[Dict[str, Any]] = None
        self.last_report = None
        self._val_model: Optional[nn.Module] = None
        self._patched: Optional[tuple] = None  # (wrapper-level model, previous val_step)
        self._pending: Optional[tuple] = None  # (reference model, converted model, phase)

    # -- order with respect to EMAHook -------------------------------------------------------
    def before_run(self, runner) -> None:
        """Refuse a hook order in which EMAHook would swap its weights in after this hook."""
        hooks: Sequence[Hook] = runner.hooks
        mine = next(i for i, hook in enumerate(hooks) if hook is self)
        for i, hook in enumerate(hooks):
            if isinstance(hook, EMAHook) and i > mine:
                raise ValueError(
                    f'ReparameterizeHook (priority {self.priority}) runs before EMAHook '
                    f'(priority {hook.priority}), so it would convert the weights before EMA '
                    'swaps its averages in. Give ReparameterizeHook a lower priority than '
                    "EMAHook, e.g. the default 'LOW'.")

    # -- checkpoints: tagged with the form they hold ----------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Tag ``checkpoint['meta']['rep_mm_form']`` with the form of the saved weights
        (:func:`rep_mm.io.record_form`): ``'training'`` during training, since validation
        converts a copy only; no tag for a model without re-parameterizable blocks."""
        record_form(checkpoint, runner.model)

    # -- validation: a converted copy ---------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        """Convert a deep copy of the model and route ``val_step`` to it."""
        if not self.convert_before_val:
            return
        model = unwrap_model(runner.model)
        try:
            report = reparameterize(model, inplace=False)
        except ReparamError as error:
            self.last_report = error.report
            self._conversion_failed(runner, 'val', str(error),
                                    'validating the training model unconverted')
            return
        self.last_report = report
        if not report.converted:
            runner.logger.info('ReparameterizeHook: no block to convert '
                               f'({report.summary()}); validating the model as it is')
            return
        converted = report.model.eval()
        converted.requires_grad_(False)
        converted.zero_grad(set_to_none=True)  # the copy needs no gradient buffers
        previous = runner.model.__dict__.get('val_step', _MISSING)
        runner.model.val_step = converted.val_step  # instance attribute shadows the method
        self._val_model, self._patched = converted, (runner.model, previous)
        if self.verify:
            self._pending = (model, converted, 'val')
        runner.logger.info(f'ReparameterizeHook: validating a converted copy: '
                           f'{report.summary()}')

    def before_val_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        """Verify the converted copy on the first validation batch."""
        self._check_first_batch(runner, batch_idx, data_batch)

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Give ``val_step`` back to the training model and free the converted copy."""
        if self._patched is not None:
            wrapper, previous = self._patched
            if previous is _MISSING:
                del wrapper.val_step
            else:
                wrapper.val_step = previous
        self._val_model = self._patched = self._pending = None

    @property
    def val_model(self) -> Optional[nn.Module]:
        """The converted copy that answers ``val_step`` during the current validation."""
        return self._val_model

    # -- test: in place -----------------------------------------------------------------------
    def before_test_epoch(self, runner) -> None:
        """Convert the (unwrapped) model in place, and EMAHook's copy along with it."""
        if not self.convert_before_test:
            return
        model = unwrap_model(runner.model)
        # a dry run first: a block that cannot be converted leaves the whole model (and the
        # EMA copy, whose swap pairs tensors by position) in training form
        ema_hooks = [hook for hook in runner.hooks if isinstance(hook, EMAHook)
                     and getattr(hook, 'ema_model', None) is not None]
        problems = conversion_problems(model) + [
            f'EMA copy: {p}' for hook in ema_hooks for p in conversion_problems(
                hook.ema_model.module)]
        if problems:
            self.last_report = None
            self._conversion_failed(runner, 'test', '; '.join(problems),
                                    'testing the training form unconverted')
            return
        reference = copy.deepcopy(model).eval() if self.verify else None
        try:  # foreign blocks are checked only after their own conversion
            report = reparameterize(model)
            self.last_report = report
            for hook in ema_hooks:
                self._convert_ema(hook)
        except ReparamError as error:
            self.last_report = error.report
            self._conversion_failed(runner, 'test', str(error),
                                    'testing the model as far as it was converted')
            return
        if reference is not None:
            self._pending = (reference, model, 'test')
        runner.logger.info(f'ReparameterizeHook: testing the converted model: '
                           f'{report.summary()}')

    def before_test_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        """Verify the converted model on the first test batch."""
        self._check_first_batch(runner, batch_idx, data_batch)

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Free the training-form reference kept for verification."""
        self._pending = None

    @staticmethod
    def _convert_ema(hook: EMAHook) -> None:
        """Convert the averaged model so that EMAHook's swap pairs fused tensors with fused."""
        averaged = hook.ema_model
        reparameterize(averaged.module)
        # its lookup of the averaged tensors by name must follow the new parameters
        averaged.avg_parameters = (averaged.module.state_dict() if averaged.update_buffers
                                   else dict(averaged.module.named_parameters()))

    # -- verification -------------------------------------------------------------------------
    def _check_first_batch(self, runner, batch_idx: int, data_batch: Any) -> None:
        if self._pending is None or batch_idx != 0 or data_batch is None:
            return
        reference, converted, phase = self._pending
        self._pending = None
        modes = [(m, m.training) for m in (*reference.modules(), *converted.modules())]
        reference.eval()
        converted.eval()
        try:
            with torch.no_grad():
                data = reference.data_preprocessor(data_batch, False)
                expected = forward_tensor(reference, data)
                actual = forward_tensor(converted, data)
        finally:
            for module, mode in modes:
                module.training = mode
        tolerance = self._tolerance(converted)
        result = compare_model_outputs(expected, actual, tolerance)
        failures = result.failures()
        passed = not failures
        self.last_check = dict(phase=phase, max_abs_error=result.max_abs,
                               max_rel_error=result.max_rel, tolerance=tolerance,
                               passed=passed, failures=failures,
                               nonfinite=[f.to_dict() for f in result.nonfinite])
        verdict = (f'max abs error {result.max_abs:.3g}, max rel error {result.max_rel:.3g} '
                   if passed else f'{result.summary(verdict=False)} ')
        message = (f'ReparameterizeHook: {phase} equivalence on the first batch: {verdict}'
                   f"({'PASS' if passed else 'FAIL'} at tolerance {tolerance:g})")
        if passed:
            runner.logger.info(message)
        elif self.raise_on_failure:
            raise RuntimeError(message + '; the converted model does not compute what the '
                               'training-form model computes')
        else:
            runner.logger.warning(message)

    def _tolerance(self, model: nn.Module) -> float:
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        return self.tolerance if self.tolerance is not None else default_tolerance(dtype)

    def _conversion_failed(self, runner, phase: str, reason: str, fallback: str) -> None:
        """A model that cannot be converted: a failed check, logged or raised."""
        message = f'ReparameterizeHook: {phase}: the model cannot be converted: {reason}'
        self.last_check = dict(phase=phase, max_abs_error=float('nan'),
                               max_rel_error=float('nan'),
                               tolerance=self._tolerance(unwrap_model(runner.model)),
                               passed=False, failures=[reason], nonfinite=[])
        if self.raise_on_failure:
            raise RuntimeError(message)
        runner.logger.warning(f'{message}; {fallback}')
