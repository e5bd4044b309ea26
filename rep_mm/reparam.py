"""The deploy protocol and ``reparameterize()``, which applies it to any model.

A *re-parameterizable block* (subclass of :class:`ReparamBlock`) trains with several linear
branches and folds them into one operator:

* ``equivalent_kernel_bias()`` -> ``(kernel, bias)`` of the single operator, differentiable;
* ``switch_to_deploy()`` builds that operator and deletes the branches (idempotent, works in
  train or eval mode because it folds BatchNorm running statistics, keeps device and dtype);
* ``deploy`` tells which form the block is in; ``deploy=True`` at construction builds the fused
  form directly.

:func:`reparameterize` walks any ``nn.Module`` (mm models, DDP / mmengine wrappers, foreign
blocks that have ``switch_to_deploy`` / ``reparameterize`` / ``local_inject``) and converts it,
optionally verifying that the outputs did not change.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .fusion import KernelBias

__all__ = ['ReparamBlock', 'ReparamReport', 'reparameterize', 'verify_equivalence',
           'max_errors', 'is_reparam_module', 'default_tolerance']

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


class ReparamBlock(nn.Module):
    """Base of every rep_mm block with training-time branches and a fused deploy form."""

    deploy: bool = False

    def equivalent_kernel_bias(self) -> KernelBias:
        """``(kernel, bias)`` of the single operator this block folds into (differentiable)."""
        raise NotImplementedError

    def _build_deploy_module(self, kernel: Tensor, bias: Tensor) -> None:
        """Create the fused operator from ``(kernel, bias)`` and delete the branches."""
        raise NotImplementedError

    def _make_fused_conv(self) -> nn.Conv2d:
        """The (uninitialised) fused conv with bias, from the block's attributes
        ``in_channels, out_channels, kernel_size, stride, padding, dilation, groups`` and
        ``padding_mode`` (``'zeros'`` when absent); blocks of another shape override this."""
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, bias=True,
                         padding_mode=getattr(self, 'padding_mode', 'zeros'))

    def _install_fused(self, name: str, kernel: Tensor, bias: Tensor,
                       branches: Iterable[str], fused: Optional[nn.Module] = None) -> None:
        """Load ``(kernel, bias)`` into ``fused`` and make it the block's ``name`` submodule.

        ``fused`` (default :meth:`_make_fused_conv`) is moved to the device and dtype of
        ``kernel`` and put in the block's train/eval mode; the training-time ``branches``
        (attribute names; absent ones are skipped) are deleted first, so ``name`` may be one
        of them.
        """
        fused = (self._make_fused_conv() if fused is None else fused).to(
            device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        fused.train(self.training)
        for branch in branches:
            if hasattr(self, branch):
                delattr(self, branch)
        setattr(self, name, fused)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the branches into one operator in place; a no-op on a deployed block."""
        if self.deploy:
            return
        reference = next(self.parameters())
        kernel, bias = self.equivalent_kernel_bias()
        self._build_deploy_module(kernel.detach().to(reference.dtype),
                                  bias.detach().to(reference.dtype))
        self.deploy = True


def is_reparam_module(module: nn.Module) -> bool:
    """True for rep_mm blocks and for foreign modules that expose a conversion method."""
    if isinstance(module, ReparamBlock):
        return True
    return any(callable(getattr(module, name, None)) for name in FOREIGN_CONVERSION_METHODS)


@dataclass
class ReparamReport:
    """What :func:`reparameterize` did."""

    model: nn.Module
    converted: List[str] = field(default_factory=list)
    already_deployed: List[str] = field(default_factory=list)
    max_abs_error: Optional[float] = None
    max_rel_error: Optional[float] = None
    tolerance: Optional[float] = None

    @property
    def verified(self) -> bool:
        return self.max_rel_error is not None

    @property
    def passed(self) -> Optional[bool]:
        if self.max_rel_error is None or self.tolerance is None:
            return None
        return self.max_rel_error <= self.tolerance

    def summary(self) -> str:
        text = (f'{len(self.converted)} block(s) converted, '
                f'{len(self.already_deployed)} already in deploy form')
        if self.verified:
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


def max_errors(reference: Any, candidate: Any) -> Tuple[float, float]:
    """``(max |a - b|, max |a - b| / max |a|)`` over all tensors of two outputs of one model."""
    ref, cand = _flatten_tensors(reference), _flatten_tensors(candidate)
    if len(ref) != len(cand) or not ref:
        raise ValueError(f'outputs do not match in structure: {len(ref)} vs {len(cand)} tensors')
    max_abs, max_ref = 0.0, 0.0
    for a, b in zip(ref, cand):
        if a.shape != b.shape:
            raise ValueError(f'output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}')
        a64, b64 = a.detach().double(), b.detach().double()
        max_abs = max(max_abs, (a64 - b64).abs().max().item())
        max_ref = max(max_ref, a64.abs().max().item())
    return max_abs, max_abs / max(max_ref, torch.finfo(torch.float64).tiny)


def _run(model: nn.Module, inputs: Union[Tensor, Callable[[nn.Module], Any]]) -> Any:
    with torch.no_grad():
        return inputs(model) if callable(inputs) and not isinstance(inputs, Tensor) else model(inputs)


def _modes(model: nn.Module) -> List[Tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _convert_in_place(model: nn.Module, report: ReparamReport) -> None:
    modules = list(model.named_modules())
    reparam_names = [name for name, m in modules if is_reparam_module(m)]

    def is_container(name: str) -> bool:
        prefix = f'{name}.' if name else ''
        return any(other != name and other.startswith(prefix) for other in reparam_names)

    # innermost first, so that a foreign container's own conversion loop finds its blocks done
    for name, module in reversed(modules):
        if isinstance(module, ReparamBlock):
            (report.already_deployed if module.deploy else report.converted).append(name)
            module.switch_to_deploy()
        elif is_reparam_module(module) and not getattr(module, 'is_reparam_container', False):
            if not is_container(name):
                was_deployed = bool(getattr(module, 'deploy', False) or
                                    getattr(module, 'inference_mode', False))
                (report.already_deployed if was_deployed else report.converted).append(name)
            for method in FOREIGN_CONVERSION_METHODS:
                if callable(getattr(module, method, None)):
                    getattr(module, method)()
                    break
    report.converted.reverse()
    report.already_deployed.reverse()
    # containers (backbones, heads) finish their own deploy form: flags, auxiliary heads ...
    for _, module in modules:
        if callable(getattr(module, 'after_reparameterize', None)):
            module.after_reparameterize()


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
            and after conversion are compared in eval mode; the model's train/eval modes are
            restored afterwards.
        inplace: convert ``model`` itself (default) or a deep copy, returned in ``report.model``.
        tolerance: relative tolerance for ``report.passed`` (default 1e-5 for fp32,
            1e-10 for fp64, 1e-2 for fp16, 5e-2 for bf16 models).

    Returns:
        ReparamReport: converted block names, and errors when ``verify`` is given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'reparameterize expects an nn.Module (a backbone, an mm model or a '
                        f'wrapper), got {type(model).__name__}')
    if verify is not None and not isinstance(verify, Tensor) and not callable(verify):
        raise TypeError(f'verify must be None, an input tensor or a callable model -> output, '
                        f'got {type(verify).__name__}')
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
    if verify is not None:
        candidate = _run(model, verify)
        model.train(modes[0][1])  # the root's mode reaches operators built by the conversion
        for module, mode in modes:
            module.training = mode
        report.max_abs_error, report.max_rel_error = max_errors(reference, candidate)
        if tolerance is None:
            tolerance = default_tolerance(next((p.dtype for p in model.parameters()),
                                               torch.float32))
        report.tolerance = tolerance
    return report


def verify_equivalence(model: nn.Module, inputs: Union[Tensor, Callable[[nn.Module], Any]],
                       tolerance: Optional[float] = None) -> ReparamReport:
    """Convert a deep copy of ``model`` and compare outputs; ``model`` itself is untouched."""
    return reparameterize(model, verify=inputs, inplace=False, tolerance=tolerance)
