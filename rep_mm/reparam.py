"""The deploy protocol and ``reparameterize()``, which applies it to any model.

A *re-parameterizable block* (subclass of :class:`ReparamBlock`) trains with several linear
branches and folds them into one operator:

* ``equivalent_kernel_bias()`` -> ``(kernel, bias)`` of the single operator, differentiable;
* ``switch_to_deploy()`` builds that operator and deletes the branches (idempotent, works in
  train or eval mode because it folds BatchNorm running statistics, keeps device and dtype);
* ``deploy`` tells which form the block is in; ``deploy=True`` at construction builds the fused
  form directly.

A block only declares what is its own (the fused operator's name ``fused_name``, the deleted
``branch_names``, the folding ``_fold_branches()`` built on :mod:`rep_mm.fusion`, and the fused
operator's geometry where it is not the block's conv); :class:`ReparamBlock` does the rest.

:func:`reparameterize` walks any ``nn.Module`` (mm models, DDP / mmengine wrappers, foreign
blocks that have ``switch_to_deploy`` / ``reparameterize`` / ``local_inject``) and converts it,
optionally verifying that the outputs did not change.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .verify.compare import Comparison, compare
from .fusion import KernelBias

__all__ = ['ReparamBlock', 'ReparamReport', 'ReparamError', 'reparameterize',
           'verify_equivalence', 'max_errors', 'compare_model_outputs', 'conversion_problems',
           'is_reparam_module', 'default_tolerance']

# Methods by which other libraries' blocks (mmpretrain, timm, the original repos) convert.
FOREIGN_CONVERSION_METHODS = ('switch_to_deploy', 'reparameterize', 'local_inject')


# bfloat16 keeps 8 significant bits (unit roundoff 2^-8 = 3.9e-3, 8x float16's 2^-11): the
# training form of RepVGG-A0 / RepMLPNet-T224 in bf16 is itself 1.1e-2..1.3e-2 away from the
# exact function, and a correct conversion differs from it by up to 1.9e-2
# (benchmarks/mixed_precision.py, docs/mixed_precision.md); 1e-2 would fail correct bf16 models.
_TOLERANCES = {torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def default_tolerance(dtype: torch.dtype) -> float:
    """Accepted ``max |a - b| / max |a|`` of a conversion: 1e-5 for float32, 1e-10 for
    float64, 1e-2 for float16 and 5e-2 for bfloat16 (fp16/bf16 models fold in float32; the
    fused kernel is rounded once to the format, the rest is the format's own arithmetic)."""
    return _TOLERANCES.get(dtype, 1e-5)


class ReparamError(ValueError):
    """A block cannot be converted: its fused kernel / bias would be NaN or infinite, or does
    not fit in the model's dtype. The block is left in training form.

    Attributes:
        block: the block's module path in the model ('' when raised by the block itself).
        report: the :class:`ReparamReport` of the :func:`reparameterize` call that raised it
            (None when raised by ``switch_to_deploy`` of one block).
    """

    def __init__(self, message: str, block: str = '',
                 report: Optional['ReparamReport'] = None) -> None:
        super().__init__(message)
        self.block = block
        self.report = report


def _nonfinite_tensors(module: nn.Module) -> List[str]:
    """``'<name> (<count> NaN/inf of <numel>)'`` for every floating parameter and buffer of
    ``module`` that is not finite, and every BatchNorm whose ``running_var + eps <= 0`` (its
    folded scale ``gamma / sqrt(var + eps)`` is NaN or infinite)."""
    found = []
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                found.append(f'{name} ({bad} NaN/inf of {tensor.numel()})')
    for name, bn in module.named_modules():
        if isinstance(bn, _BatchNorm) and bn.running_var is not None:
            bad = int((bn.running_var.double() + bn.eps <= 0).sum())
            if bad:
                prefix = f'{name}.' if name else ''
                found.append(f'{prefix}running_var ({bad} value(s) <= -eps: negative variance)')
    return found


class ReparamBlock(nn.Module):
    """Base of every rep_mm block with training-time branches and a fused deploy form.

    A block *declares* how it differs from the others; the deploy protocol is implemented
    here once:

    * ``fused_name`` (class attribute): the official attribute name of the fused operator
      (``'rbr_reparam'``, ``'dbb_reparam'`` ...), hence its state-dict keys in deploy form;
    * ``branch_names``: the training-time attributes (sub-modules, parameters, buffers) that
      the conversion deletes; absent ones are skipped. A class attribute, or a property when the
      names depend on the constructor arguments;
    * ``_fold_branches()``: ``(kernel, bias)`` of the fused operator computed from the
      training-time branches, differentiable;
    * ``_make_fused_conv()``: the uninitialised fused operator; the default is the conv of the
      block's ``in_channels, out_channels, kernel_size, stride, padding, dilation, groups``
      (and ``padding_mode``), overridden only by blocks whose fused operator has another
      geometry (depthwise ghost convs, RepMLP's FC).

    Example (the RepVGG block)::

        class RepVGGStyleBlock(ReparamBlock):
            fused_name = 'rbr_reparam'
            branch_names = ('rbr_dense', 'rbr_1x1', 'rbr_identity')

            def _fold_branches(self):
                return sum_branches([...])      # fusion.py equations
    """

    fused_name: str = ''
    branch_names: Tuple[str, ...] = ()
    deploy: bool = False

    def equivalent_kernel_bias(self) -> KernelBias:
        """``(kernel, bias)`` of the single operator this block folds into: the fused
        operator's own ``weight`` / ``bias`` in deploy form, else :meth:`_fold_branches`
        (differentiable)."""
        if self.deploy:
            fused = getattr(self, self.fused_name)
            return fused.weight, fused.bias
        return self._fold_branches()

    def _fold_branches(self) -> KernelBias:
        """``(kernel, bias)`` of the fused operator from the training-time branches."""
        raise NotImplementedError(f'{type(self).__name__} does not define _fold_branches()')

    def _make_fused_conv(self) -> nn.Conv2d:
        """The (uninitialised) fused conv with bias, from the block's attributes
        ``in_channels, out_channels, kernel_size, stride, padding, dilation, groups`` and
        ``padding_mode`` (``'zeros'`` when absent); blocks of another shape override this."""
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, bias=True,
                         padding_mode=getattr(self, 'padding_mode', 'zeros'))

    def _init_deploy_form(self) -> None:
        """Register an uninitialised fused operator as ``fused_name``: what a constructor
        with ``deploy=True`` builds (a deploy-form checkpoint is then loaded into it)."""
        setattr(self, self._checked_fused_name(), self._make_fused_conv())

    def _checked_fused_name(self) -> str:
        if not self.fused_name:
            raise NotImplementedError(f'{type(self).__name__} does not declare fused_name')
        return self.fused_name

    def _install_fused(self, kernel: Tensor, bias: Tensor) -> None:
        """Load ``(kernel, bias)`` into a new :meth:`_make_fused_conv` and make it the block's
        ``fused_name`` sub-module, after deleting the ``branch_names``.

        The fused operator gets the device and dtype of ``kernel`` and the block's train/eval
        mode. A training-time attribute of the same name (e.g. RepGhost's
        ``cheap_operation``) is replaced in place, keeping its position among the sub-modules.
        """
        name = self._checked_fused_name()
        fused = self._make_fused_conv().to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        fused.train(self.training)
        for branch in self.branch_names:
            if hasattr(self, branch):
                delattr(self, branch)
        setattr(self, name, fused)

    @torch.no_grad()
    def checked_kernel_bias(self) -> KernelBias:
        """``equivalent_kernel_bias()`` cast to the block's dtype, after checking that it can
        be installed: kernel and bias (folded in float32 or wider) are finite, and finite
        after the cast (an fp16 / bf16 block whose fused kernel exceeds the format's largest
        value would turn into inf and then NaN outputs).

        Raises:
            ReparamError: naming the tensor (kernel / bias) and either the non-finite
                parameters / buffers of the block that caused it, or the largest magnitude
                and the dtype's maximum. Nothing is changed.
        """
        dtype = next(self.parameters()).dtype
        kernel, bias = (t.detach() for t in self.equivalent_kernel_bias())
        name = type(self).__name__
        for label, tensor in (('kernel', kernel), ('bias', bias)):
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                causes = _nonfinite_tensors(self)
                cause = (f'non-finite inputs: {", ".join(causes)}' if causes else
                         f'no parameter or buffer is non-finite, so the folding itself '
                         f'overflowed in {tensor.dtype}')
                raise ReparamError(f'{name}: the fused {label} {list(tensor.shape)} has {bad} '
                                   f'NaN/inf value(s) of {tensor.numel()}; {cause}. The block '
                                   f'was left in training form.')
        for label, tensor in (('kernel', kernel), ('bias', bias)):
            cast = tensor.to(dtype)
            if not bool(torch.isfinite(cast).all()):
                largest = float(tensor.abs().max())
                raise ReparamError(
                    f'{name}: the fused {label} {list(tensor.shape)} does not fit in {dtype}: '
                    f'its largest magnitude {largest:.6g} exceeds the largest {dtype} value '
                    f'{torch.finfo(dtype).max:.6g} ({int((~torch.isfinite(cast)).sum())} '
                    f'value(s) would become inf). The block was left in training form; '
                    f'convert it in float32 (model.float()) or keep its branches.')
        return kernel.to(dtype), bias.to(dtype)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the branches into one operator in place; a no-op on a deployed block.

        Raises:
            ReparamError: the fused kernel or bias is not finite, or not representable in
                the block's dtype (see :meth:`checked_kernel_bias`); the block is unchanged.
        """
        if self.deploy:
            return
        kernel, bias = self.checked_kernel_bias()
        self._install_fused(kernel, bias)
        self.deploy = True


def is_reparam_module(module: nn.Module) -> bool:
    """True for rep_mm blocks and for foreign modules that expose a conversion method."""
    if isinstance(module, ReparamBlock):
        return True
    return any(callable(getattr(module, name, None)) for name in FOREIGN_CONVERSION_METHODS)


@dataclass
class ReparamReport:
    """What :func:`reparameterize` did.

    Attributes:
        converted, already_deployed: module paths of the blocks.
        errors: ``'<path>: <reason>'`` of every block that could not be converted (left in
            training form): non-finite fused kernel / bias, or one that does not fit in the
            model's dtype.
        comparison: the :class:`~rep_mm.verify.compare.Comparison` of the outputs (``verify``).
        max_abs_error, max_rel_error: its headline errors; NaN when an output is not finite
            or a block could not be converted (the errors of "the converted model" are then
            undefined; ``comparison`` keeps the errors over the finite values).
        tolerance: relative tolerance of :attr:`passed`.
    """

    model: nn.Module
    converted: List[str] = field(default_factory=list)
    already_deployed: List[str] = field(default_factory=list)
    max_abs_error: Optional[float] = None
    max_rel_error: Optional[float] = None
    tolerance: Optional[float] = None
    comparison: Optional[Comparison] = None
    errors: List[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.comparison is not None or self.max_rel_error is not None

    @property
    def passed(self) -> Optional[bool]:
        """False on any conversion error or failed comparison (non-finite values anywhere,
        nothing compared, error above tolerance); None when not verified."""
        if self.errors:
            return False
        if self.comparison is not None:
            if self.tolerance is None:
                return False if self.comparison.failures() else None
            return self.comparison.passed_at(self.tolerance)
        if self.max_rel_error is None or self.tolerance is None:
            return None
        return math.isfinite(self.max_rel_error) and self.max_rel_error <= self.tolerance

    def failure_reasons(self) -> List[str]:
        """Why :attr:`passed` is not True: blocks that could not be converted, then the
        comparison's failures (non-finite values, error above tolerance); empty on a pass."""
        reasons = [f'not converted: {error}' for error in self.errors]
        if self.comparison is not None:
            reasons += self.comparison.failures(self.tolerance)
        elif self.verified and not self.passed:
            reasons.append(f'max rel error {self.max_rel_error:.3g} > tolerance {self.tolerance:g}')
        if not reasons and not self.verified:
            reasons.append('not verified (no input to compare on)')
        return reasons

    def summary(self) -> str:
        text = (f'{len(self.converted)} block(s) converted, '
                f'{len(self.already_deployed)} already in deploy form')
        if self.errors:
            text += (f'; FAIL: {len(self.errors)} block(s) could not be converted and stay in '
                     f'training form: ' + '; '.join(self.errors))
        if self.comparison is not None:
            if self.errors:  # the comparison is of a partly converted model: never a PASS
                text += ('; outputs of the partly converted model: '
                         + self.comparison.summary(self.tolerance, verdict=False))
            else:
                text += '; ' + self.comparison.summary(self.tolerance)
        elif self.verified:
            text += (f'; max abs error {self.max_abs_error:.3g}, '
                     f'max rel error {self.max_rel_error:.3g}')
            if self.tolerance is not None:
                text += f" ({'PASS' if self.passed else 'FAIL'} at {self.tolerance:g})"
        return text


def _flatten_tensors(output: Any) -> List[Tensor]:
    """All tensors in a (nested) model output, in a deterministic order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in sorted(output, key=str) for t in _flatten_tensors(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _flatten_tensors(item)]
    for attr in ('seg_logits', 'pred_score', 'pred_instances'):  # mm data samples
        if hasattr(output, attr):
            return _flatten_tensors(getattr(output, attr))
    if hasattr(output, 'data') and isinstance(output.data, Tensor):
        return [output.data]
    return []


def compare_model_outputs(reference: Any, candidate: Any,
                          tolerance: Optional[float] = None) -> Comparison:
    """:func:`rep_mm.verify.compare.compare` of all tensors of two (nested) outputs of one model.

    Raises:
        ValueError: the outputs hold no tensor, different numbers of tensors, or tensors of
            different shapes.
    """
    ref, cand = _flatten_tensors(reference), _flatten_tensors(candidate)
    if len(ref) != len(cand) or not ref:
        raise ValueError(f'outputs do not match in structure: {len(ref)} vs {len(cand)} tensors')
    return compare(ref, cand, tolerance=tolerance)


def max_errors(reference: Any, candidate: Any) -> Tuple[float, float]:
    """``(max |a - b|, max |a - b| / max |a|)`` over all tensors of two outputs of one model.

    Both are NaN when the comparison cannot pass at any tolerance: a NaN or infinity in
    either output (also at the same place in both), or no value at all; so a caller that
    tests ``max_rel <= tolerance`` fails. :func:`compare_model_outputs` says why.
    """
    result = compare_model_outputs(reference, candidate)
    if result.failures(math.inf):
        return math.nan, math.nan
    return result.max_abs, result.max_rel


def _run(model: nn.Module, inputs: Union[Tensor, Callable[[nn.Module], Any]]) -> Any:
    with torch.no_grad():
        return inputs(model) if callable(inputs) and not isinstance(inputs, Tensor) else model(inputs)


def _modes(model: nn.Module) -> List[Tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _convert_in_place(model: nn.Module, report: ReparamReport) -> None:
    """Convert every block, innermost first; a block that raises :class:`ReparamError` is
    recorded in ``report.errors`` and left as it is, the others are converted."""
    modules = list(model.named_modules())
    reparam_names = [name for name, m in modules if is_reparam_module(m)]

    def is_container(name: str) -> bool:
        prefix = f'{name}.' if name else ''
        return any(other != name and other.startswith(prefix) for other in reparam_names)

    def describe(name: str, module: nn.Module, error: Exception) -> str:
        return f"{name or '<root>'} ({type(module).__name__}): {error}"

    # innermost first, so that a foreign container's own conversion loop finds its blocks done
    for name, module in reversed(modules):
        if isinstance(module, ReparamBlock):
            was_deployed = module.deploy
            try:
                module.switch_to_deploy()
            except ReparamError as error:
                report.errors.append(describe(name, module, error))
                continue
            (report.already_deployed if was_deployed else report.converted).append(name)
        elif is_reparam_module(module) and not getattr(module, 'is_reparam_container', False):
            leaf = not is_container(name)
            was_deployed = bool(getattr(module, 'deploy', False) or
                                getattr(module, 'inference_mode', False))
            try:
                for method in FOREIGN_CONVERSION_METHODS:
                    if callable(getattr(module, method, None)):
                        getattr(module, method)()
                        break
            except ReparamError as error:  # e.g. a foreign container around rep_mm blocks
                report.errors.append(describe(name, module, error))
                continue
            if leaf:
                # a foreign block folds without rep_mm's checks: what it installed must be
                # finite (this cannot be undone, but it must not pass unnoticed)
                bad = [] if was_deployed else _nonfinite_tensors(module)
                if bad:
                    report.errors.append(describe(name, module, ReparamError(
                        f'after its own {method}() the block holds non-finite values: '
                        f'{", ".join(bad)}')))
                    continue
                (report.already_deployed if was_deployed else report.converted).append(name)
    report.converted.reverse()
    report.already_deployed.reverse()
    report.errors.reverse()
    # containers (backbones, heads) finish their own deploy form: flags, auxiliary heads ...
    for _, module in modules:
        if callable(getattr(module, 'after_reparameterize', None)):
            module.after_reparameterize()


def conversion_problems(model: nn.Module) -> List[str]:
    """Dry run: ``'<path> (<class>): <reason>'`` for every rep_mm block of ``model`` that
    :func:`reparameterize` would leave in training form (its fused kernel or bias would be
    non-finite or not fit the dtype). Changes nothing; foreign blocks are not checked."""
    problems = []
    for name, module in model.named_modules():
        if isinstance(module, ReparamBlock) and not module.deploy:
            try:
                module.checked_kernel_bias()
            except ReparamError as error:
                problems.append(f"{name or '<root>'} ({type(module).__name__}): {error}")
    return problems


def reparameterize(model: nn.Module,
                   verify: Union[None, Tensor, Callable[[nn.Module], Any]] = None,
                   inplace: bool = True,
                   tolerance: Optional[float] = None) -> ReparamReport:
    """Convert every re-parameterizable block of ``model`` to its deploy form.

    Args:
        model: any ``nn.Module``: a rep_mm backbone, a whole mmpretrain / mmseg / mmdet model,
            a DDP or mmengine wrapper. Blocks of other libraries that expose
            ``switch_to_deploy``, ``reparameterize`` or ``local_inject`` are converted too.
        verify: an input tensor (or a callable ``model -> output``) on which the outputs before
            and after conversion are compared in eval mode (:mod:`rep_mm.verify.compare`: any NaN /
            inf in either output fails); the model's train/eval modes are restored afterwards.
        inplace: convert ``model`` itself (default) or a deep copy, returned in ``report.model``.
        tolerance: relative tolerance for ``report.passed`` (default 1e-5 for fp32,
            1e-10 for fp64, 1e-2 for fp16, 5e-2 for bf16 models).

    A block whose fused kernel or bias would be NaN / inf, or larger than its dtype can hold
    (fp16 overflow), is left in training form and named in ``report.errors``; the other
    blocks are converted. Without ``verify`` this raises :class:`ReparamError` (its
    ``report`` attribute holds the report); with ``verify`` the report says FAIL instead
    (``passed`` False), since a verdict was asked for.

    Returns:
        ReparamReport: converted block names, and errors when ``verify`` is given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'reparameterize expects an nn.Module (a backbone, an mm model or a '
                        f'wrapper), got {type(model).__name__}')
    if verify is not None and not isinstance(verify, Tensor) and not callable(verify):
        raise TypeError(f'verify must be None, an input tensor or a callable model -> output, '
                        f'got {type(verify).__name__}')
    meta = [name for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
            if t.is_meta]
    if meta:
        raise ValueError(f'reparameterize needs real weights, but {len(meta)} parameter(s) / '
                         f'buffer(s) are on the meta device (e.g. {meta[0]!r}): build the model '
                         f'on the CPU, or call model.to_empty(device="cpu") and load a checkpoint '
                         f'first')
    model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if isinstance(verify, Tensor) and verify.is_floating_point() and \
            model_dtype is not None and verify.dtype != model_dtype:
        raise TypeError(f'the verify input is {verify.dtype} but the model is {model_dtype}: '
                        f'cast one to the other (e.g. x.to({model_dtype})) before converting')
    if not inplace:
        model = copy.deepcopy(model)
    report = ReparamReport(model=model)
    reference = None
    if verify is not None:
        modes = _modes(model)
        model.eval()
        reference = _run(model, verify)
    _convert_in_place(model, report)
    if verify is None:
        if report.errors:
            raise ReparamError(f'{len(report.errors)} block(s) could not be converted and stay '
                               f'in training form: ' + '; '.join(report.errors),
                               block=report.errors[0].split(' ', 1)[0], report=report)
        return report
    candidate = _run(model, verify)
    model.train(modes[0][1])  # the root's mode reaches operators built by the conversion
    for module, mode in modes:
        module.training = mode
    if tolerance is None:
        tolerance = default_tolerance(next((p.dtype for p in model.parameters()),
                                           torch.float32))
    report.tolerance = tolerance
    report.comparison = compare_model_outputs(reference, candidate, tolerance)
    report.max_abs_error, report.max_rel_error = (
        (math.nan, math.nan) if report.errors else
        (report.comparison.max_abs, report.comparison.max_rel))
    return report


def verify_equivalence(model: nn.Module, inputs: Union[Tensor, Callable[[nn.Module], Any]],
                       tolerance: Optional[float] = None) -> ReparamReport:
    """Convert a deep copy of ``model`` and compare outputs; ``model`` itself is untouched."""
    return reparameterize(model, verify=inputs, inplace=False, tolerance=tolerance)
