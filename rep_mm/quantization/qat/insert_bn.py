"""Flow A, QAT after conversion (the RepVGG authors' recipe): BatchNorm inserted after each
fused conv of a converted (deploy-form) model, fine-tuned with fake quantization, folded back.

Steps (``y = conv(x; W, b)`` the fused conv, ``(N, C_out, H', W')``):

1. :func:`prepare_insert_bn` replaces every fused conv (``rbr_reparam`` ... of a deploy-form
   block) by a :class:`BNConv2d` with the same ``weight`` / ``bias`` (same state-dict names)
   and a new BatchNorm ``bn`` plus an input quantizer ``input_quant``. Until calibrated it
   computes exactly the fused conv.
2. :func:`calibrate_inserted_bn` runs a few batches of training data, MEASURES the per-channel
   mean ``m_c`` and (unbiased) variance ``v_c`` of every fused conv's output (forward hooks,
   float64 sums) and sets ``running_mean = m``, ``running_var = v``, ``gamma = sqrt(v + eps)``,
   ``beta = m``, so that in eval mode ``BN(y) = gamma (y - m) / sqrt(v + eps) + beta = y``:
   the model computes what the converted one did (checked on real data, <= 1e-5 relative).
   The input quantizers observe the conv inputs of the same batches.
3. Training (:meth:`BNConv2d.forward`), with the standard QAT BN folding::

       mu, sigma^2 = batch statistics of conv(x_q; W, b)  (training; running ones in eval)
       t = gamma / sqrt(sigma^2 + eps)
       W' = W * t  (per output channel),   b' = beta + (b - mu) * t
       out = conv(x_q; fq(W'), b'),         x_q = fq_act(x)

   ``fq`` is per output channel, or per tensor with ``weight_quant='per_tensor'``.
   ``fake_quant=False`` fine-tunes the deploy-form model in floating point instead
   (``out = BN(conv(x; W, b))``).
4. :func:`fold_bn` folds ``bn`` back with the running statistics (the same ``W', b'`` as the
   eval forward, bit for bit), giving a plain deploy-form model.

Covered: every deploy-form ``ReparamBlock`` whose fused operator is an ``nn.Conv2d`` named
``rbr_reparam`` (RepVGGBlock, RepOptVGGBlock, OREPARepVGGBlock), ``dbb_reparam`` (DBB),
``fused_conv`` (ACB), ``cheap_operation`` (RepGhost) or the OREPA blocks' ``fused_name``.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...fusion import fuse_bn_statistics, identity_batchnorm_
from ...reparam import ReparamBlock
from .errors import QATError
from .fake_quant import ActivationQuantizer, check_weight_granularity, fake_quant_weight
from .utils import fake_quant_disabled, output_errors, replace_submodule

__all__ = ['FUSED_CONV_NAMES', 'BNConv2d', 'fused_convs', 'prepare_insert_bn',
           'calibrate_inserted_bn', 'insert_bn', 'fold_bn', 'inserted_bn_modules']

FUSED_CONV_NAMES = ('rbr_reparam', 'dbb_reparam', 'fused_conv', 'cheap_operation')
BN_STATS = ('batch', 'running')


def _block_names(model: nn.Module, deploy: bool) -> List[str]:
    return [name or '<root>' for name, m in model.named_modules()
            if isinstance(m, ReparamBlock) and bool(m.deploy) == deploy]


def fused_convs(model: nn.Module) -> List[str]:
    """Module paths of the fused convs of the deploy-form blocks of ``model``.

    Raises:
        QATError: a block is still in training form (the model is not converted), or the
            model has no fused conv at all.
    """
    if not isinstance(model, nn.Module):
        raise QATError(f'expected an nn.Module, got {type(model).__name__}')
    training = _block_names(model, deploy=False)
    if training:
        raise QATError(f'insert-BN needs a converted (deploy-form) model, but {len(training)} '
                       f'block(s) are in training form (e.g. {", ".join(training[:3])}): convert '
                       f'it first (rep_mm.reparameterize(model)) or build it with deploy=True')
    found = []
    for name, block in model.named_modules():
        if not (isinstance(block, ReparamBlock) and block.deploy):
            continue
        names = FUSED_CONV_NAMES + ((block.fused_name,) if getattr(block, 'fused_name', '')
                                    else ())
        for attr in dict.fromkeys(names):
            if isinstance(getattr(block, attr, None), nn.Conv2d):
                found.append(f'{name}.{attr}' if name else attr)
    if not found:
        raise QATError(f'insert-BN found no fused conv ({"/".join(FUSED_CONV_NAMES)} of a '
                       f'deploy-form rep_mm block) in {type(model).__name__}')
    return found


class BNConv2d(nn.Conv2d):
    """A fused conv with an inserted BatchNorm (flow A; module docstring for the equations).

    Shapes: ``(N, C_in, H, W)`` -> ``(N, C_out, H', W')`` as the conv it replaces.

    Args:
        conv (nn.Conv2d): the fused conv; its weight and bias (zeros if it has none) are copied.
        fake_quant (bool): fake-quantize weights (int8) and inputs (uint8).
        momentum (float): BN momentum of the running statistics. Default 0.1.
        eps (float): BN eps. Default 1e-5.
        averaging_constant (float): EMA constant of the input range. Default 0.01.
        bn_stats (str): statistics folded in training: ``'batch'`` (default; running
            statistics are updated) or ``'running'`` (frozen BN statistics).
        weight_quant (str): int8 weight scales ``'per_channel'`` (default) or
            ``'per_tensor'`` (:func:`.fake_quant.fake_quant_weight`).

    Buffer ``bn_calibrated`` (bool): set by :func:`calibrate_inserted_bn`; before, the module
    is the plain conv in eval mode and refuses to train.
    """

    def __init__(self, conv: nn.Conv2d, fake_quant: bool = True, momentum: float = 0.1,
                 eps: float = 1e-5, averaging_constant: float = 0.01,
                 bn_stats: str = 'batch', weight_quant: str = 'per_channel') -> None:
        if not isinstance(conv, nn.Conv2d):
            raise QATError(f'BNConv2d wraps an nn.Conv2d, got {type(conv).__name__}')
        if bn_stats not in BN_STATS:
            raise QATError(f'bn_stats must be one of {BN_STATS}, got {bn_stats!r}')
        try:
            check_weight_granularity(weight_quant)
        except ValueError as error:
            raise QATError(str(error)) from None
        weight = conv.weight
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, conv.dilation, conv.groups, bias=True,
                         padding_mode=conv.padding_mode, device=weight.device,
                         dtype=weight.dtype)
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(conv.bias if conv.bias is not None else torch.zeros_like(self.bias))
        self.bn = nn.BatchNorm2d(conv.out_channels, eps=eps, momentum=momentum,
                                 device=weight.device, dtype=weight.dtype)
        self.input_quant = (ActivationQuantizer(averaging_constant) if fake_quant else None)
        self.fake_quant = fake_quant
        self.bn_stats = bn_stats
        self.weight_quant = weight_quant
        self.register_buffer('bn_calibrated', torch.tensor(False, device=weight.device))
        self.train(conv.training)

    def folded_weight_bias(self, mean: Tensor, var: Tensor) -> Tuple[Tensor, Tensor]:
        """``W' = W t``, ``b' = beta + (b - mean) t`` with ``t = gamma / sqrt(var + eps)``
        (``mean``, ``var``: ``(C_out,)``); differentiable."""
        return fuse_bn_statistics(self.weight, self.bias, mean, var, self.bn.weight,
                                  self.bn.bias, self.bn.eps)

    def _update_running_stats(self, y: Tensor) -> None:
        bn = self.bn
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        momentum = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                    else bn.momentum)
        F.batch_norm(y.detach(), bn.running_mean, bn.running_var, None, None, True,
                     momentum, bn.eps)

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.bn_calibrated):
            if self.training:
                raise QATError('BNConv2d: the inserted BN has no measured statistics yet; '
                               'calibrate first (calibrate_inserted_bn, or '
                               "custom_hooks=[dict(type='rep_mm.QATHook')] in the config)")
            return self._conv_forward(x, self.weight, self.bias)
        if self.input_quant is not None:
            x = self.input_quant(x)
        if not self.fake_quant:
            return self.bn(self._conv_forward(x, self.weight, self.bias))
        if self.bn.training and self.bn_stats == 'batch':  # norm_eval=True keeps bn in eval
            y = self._conv_forward(x, self.weight, self.bias)
            mean = y.mean(dim=(0, 2, 3))
            var = y.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                self._update_running_stats(y)
        else:
            mean, var = self.bn.running_mean, self.bn.running_var
        weight, bias = self.folded_weight_bias(mean, var)
        return self._conv_forward(x, fake_quant_weight(weight, self.weight_quant), bias)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, fake_quant={self.fake_quant}, '
                f'bn_stats={self.bn_stats}, weight_quant={self.weight_quant}, calibrated={bool(self.bn_calibrated)}')


def inserted_bn_modules(model: nn.Module) -> List[Tuple[str, BNConv2d]]:
    """``(path, module)`` of every :class:`BNConv2d` of ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BNConv2d)]


def prepare_insert_bn(model: nn.Module, fake_quant: bool = True, momentum: float = 0.1,
                      eps: float = 1e-5, averaging_constant: float = 0.01,
                      bn_stats: str = 'batch', weight_quant: str = 'per_channel') -> List[str]:
    """Replace every fused conv of the converted ``model`` by a (not yet calibrated)
    :class:`BNConv2d`, in place; returns their paths. The parameters exist from here on, so
    an optimizer built afterwards includes them.

    Raises:
        QATError: the model is not converted, has no fused conv, or already has inserted BN.
    """
    if inserted_bn_modules(model):
        raise QATError('the model already has inserted BN (BNConv2d); fold it first '
                       '(fold_bn) or calibrate it again (calibrate_inserted_bn)')
    names = fused_convs(model)
    for name in names:
        conv = model.get_submodule(name)
        replace_submodule(model, name, BNConv2d(conv, fake_quant, momentum, eps,
                                                averaging_constant, bn_stats, weight_quant))
    return names


def _default_forward(model: nn.Module, data: Any) -> Any:
    return model(data)


@torch.no_grad()
def calibrate_inserted_bn(model: nn.Module, inputs: Sequence[Any],
                          forward: Optional[Callable[[nn.Module, Any], Any]] = None,
                          tolerance: float = 1e-5) -> Dict[str, Any]:
    """Measure the inserted BNs' statistics on ``inputs`` and make every BN the identity.

    Args:
        model: a model prepared by :func:`prepare_insert_bn` (re-calibrating is allowed).
        inputs: a non-empty sequence of batches (e.g. preprocessed training batches).
        forward: ``forward(model, batch) -> output``; default ``model(batch)``.
        tolerance: largest accepted ``max |a - b| / max |a|`` between the model before
            (fused convs) and after (fused conv + BN, eval mode, no fake quantization) on the
            first batch.

    Under torch.distributed the sums (and the input ranges) of all ranks are pooled, so every
    rank sets the same statistics.

    Returns:
        dict: ``convs`` (count), ``batches``, ``max_abs_error``, ``max_rel_error``.

    Raises:
        QATError: no inserted BN, no input, or the exactness check failed.
    """
    modules = inserted_bn_modules(model)
    if not modules:
        raise QATError('calibrate_inserted_bn: the model has no inserted BN; call '
                       'prepare_insert_bn (or insert_bn) on the converted model first')
    inputs = list(inputs)
    if not inputs:
        raise QATError('calibrate_inserted_bn needs at least one batch of training data')
    forward = forward or _default_forward
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    reference, sums = _output_moments(model, modules, inputs, forward)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    for name, module in modules:
        if module not in sums:
            raise QATError(f'calibrate_inserted_bn: {name} was not run by the forward')
        total, squares, count = _pooled(module, *sums[module]) if distributed else sums[module]
        mean = total / count
        var = ((squares - total * mean) / max(count - 1, 1)).clamp_min(0)  # unbiased
        identity_batchnorm_(module.bn, mean, var)
        if module.bn.num_batches_tracked is not None:
            module.bn.num_batches_tracked.zero_()
        module.bn_calibrated.fill_(True)
    with fake_quant_disabled(model):
        candidate = forward(model, inputs[0])
    for module, mode in modes:
        module.training = mode
    max_abs, max_rel = output_errors(reference, candidate)
    if not max_rel <= tolerance:
        raise QATError(f'inserting BN changed the outputs: max |a - b| / max |a| = '
                       f'{max_rel:.3g} > {tolerance:g} (max |a - b| = {max_abs:.3g})')
    return dict(convs=len(modules), batches=len(inputs), max_abs_error=max_abs,
                max_rel_error=max_rel)


def _output_moments(model: nn.Module, modules: Sequence[Tuple[str, 'BNConv2d']],
                    inputs: Sequence[Any], forward: Callable[[nn.Module, Any], Any]):
    """Run ``inputs`` through ``model`` and collect, per inserted BN, the per-channel sum and
    sum of squares (float64) and the count of its fused conv's outputs; the input quantizers
    observe their ranges. Returns ``(output of the first batch, {module: [sum, sum_sq, n]})``.
    """
    sums: Dict[BNConv2d, List[Any]] = {}

    def hook(module: BNConv2d, args: Tuple[Tensor, ...], out: Tensor) -> None:
        y = out.detach().double().transpose(0, 1).flatten(1)  # (C_out, N H' W')
        acc = sums.setdefault(module, [0.0, 0.0, 0])
        acc[0] = acc[0] + y.sum(dim=1)
        acc[1] = acc[1] + (y * y).sum(dim=1)
        acc[2] += y.shape[1]
        if module.input_quant is not None:
            module.input_quant.observe(args[0])

    for _, module in modules:
        module.bn_calibrated.fill_(False)
        if module.input_quant is not None:
            module.input_quant.observer.reset_min_max_vals()
    handles = [module.register_forward_hook(hook) for _, module in modules]
    try:
        reference = forward(model, inputs[0])
        for batch in inputs[1:]:
            forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return reference, sums


def _pooled(module: 'BNConv2d', total: Tensor, squares: Tensor, count: int):
    """The moments of all ranks (every rank measured its own batches), so that ranks set the
    same statistics; the input quantizer's range is pooled too."""
    pooled = torch.cat([total, squares, total.new_tensor([count])])
    torch.distributed.all_reduce(pooled)
    channels = total.numel()
    if module.input_quant is not None:
        observer = module.input_quant.observer
        torch.distributed.all_reduce(observer.min_val, torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(observer.max_val, torch.distributed.ReduceOp.MAX)
    return pooled[:channels], pooled[channels:2 * channels], int(pooled[-1])


def insert_bn(model: nn.Module, inputs: Sequence[Any],
              forward: Optional[Callable[[nn.Module, Any], Any]] = None,
              fake_quant: bool = True, tolerance: float = 1e-5, **kwargs: Any) -> Dict[str, Any]:
    """:func:`prepare_insert_bn` then :func:`calibrate_inserted_bn` (kwargs go to the
    former: ``momentum``, ``eps``, ``averaging_constant``, ``bn_stats``); returns the
    calibration report plus ``names`` (the fused convs); kwargs may also give
    ``weight_quant``."""
    names = prepare_insert_bn(model, fake_quant=fake_quant, **kwargs)
    report = calibrate_inserted_bn(model, inputs, forward, tolerance)
    report['names'] = names
    return report


@torch.no_grad()
def fold_bn(model: nn.Module) -> List[str]:
    """Fold every inserted BN back into its conv (running statistics), in place:
    ``BNConv2d`` -> ``nn.Conv2d`` with ``W' = W t``, ``b' = beta + (b - m) t``,
    ``t = gamma / sqrt(v + eps)`` — the kernel the eval-mode forward fake-quantizes, bit for
    bit. The input quantizers are dropped. Returns the folded paths.

    Raises:
        QATError: no inserted BN, or one that was never calibrated.
    """
    modules = inserted_bn_modules(model)
    if not modules:
        raise QATError('fold_bn: the model has no inserted BN (BNConv2d) to fold')
    bad = [name for name, m in modules if not bool(m.bn_calibrated)]
    if bad:
        raise QATError(f'fold_bn: {len(bad)} inserted BN(s) were never calibrated (e.g. '
                       f'{bad[0]}): run calibrate_inserted_bn before folding')
    for name, module in modules:
        weight, bias = module.folded_weight_bias(module.bn.running_mean, module.bn.running_var)
        conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                         module.stride, module.padding, module.dilation, module.groups,
                         bias=True, padding_mode=module.padding_mode,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        conv.train(module.training)
        replace_submodule(model, name, conv)
    return [name for name, _ in modules]
