"""Flow B, QAT of the equivalent kernel: train the multi-branch model while every forward of a
covered block computes its output from the fake-quantized fused kernel.

For a covered block (training form, input ``x``: ``(N, C_in, H, W)``)::

    x_q    = fq_act(x)                                    (uint8, EMA range)
    K, b   = block.equivalent_kernel_bias()               (differentiable; BN running stats)
    y      = conv(x_q; fq(K), b)                          ((N, C_out, H', W'); fq: int8,
                                                           per channel or per tensor)
    out    = the block's own post-conv part (SE, activation ...) applied to y

so gradients reach every branch (kernels, BN gamma / beta, scales) through the fusion. In
training mode the branches are first run once without gradient on ``x_q`` so that their BN
running statistics keep tracking the data (``update_bn_stats``); the kernel is then computed
from the updated statistics. After ``switch_to_deploy()`` the fused ``rbr_reparam.weight`` is
``K`` itself, so its per-channel int8 quantization is exactly the ``fq(K)`` trained with (the
QAT block also keeps its QAT forward in deploy form: ``conv(x_q; fq(W), b)``).

Covered (exact types): :class:`~rep_mm.blocks.RepVGGBlock` (any kernel size, stride, groups,
dilation, padding mode, SE pre / post, with or without identity; RepVGG and RepVGGplus
backbones), :class:`~rep_mm.blocks.RepOptVGGBlock` (target / hs / csla) and
:class:`~rep_mm.blocks.OREPARepVGGBlock`. ``with_cp`` is ignored under QAT.
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ...blocks import OREPARepVGGBlock, RepOptVGGBlock, RepVGGBlock
from ...reparam import ReparamBlock
from .errors import QATError
from .fake_quant import ActivationQuantizer, check_weight_granularity, fake_quant_weight

__all__ = ['EqKQATMixin', 'QATRepVGGBlock', 'QATRepOptVGGBlock', 'QATOREPARepVGGBlock',
           'QAT_BLOCK_TYPES', 'prepare_eqk_qat', 'strip_eqk_qat', 'eqk_blocks']


class EqKQATMixin:
    """The QAT forward of a covered block (module docstring). Subclasses set ``_qat_base``
    (the block class) and implement ``_after_conv(y)``."""

    _qat_base: type = nn.Module
    _fused_attr: str = 'rbr_reparam'

    def _qat_setup(self, fake_quant: bool, averaging_constant: float,
                   update_bn_stats: bool, weight_quant: str = 'per_channel') -> None:
        device = next(self.parameters()).device
        self.input_quant = ActivationQuantizer(averaging_constant, enabled=fake_quant).to(device)
        self.fake_quant = fake_quant
        self.weight_quant = weight_quant
        self.update_bn_stats = update_bn_stats
        self.last_kernel: Optional[Tensor] = None
        with torch.device('meta'):  # geometry only: stride, padding (mode), dilation, groups
            object.__setattr__(self, '_qat_template', self._make_fused_conv())

    def _kernel_bias(self, x_q: Tensor) -> Tuple[Tensor, Tensor]:
        if self.deploy:
            fused = getattr(self, self._fused_attr)
            return fused.weight, fused.bias
        if self.training and self.update_bn_stats:
            with torch.no_grad():
                self._qat_base.forward(self, x_q)
        return self.equivalent_kernel_bias()

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_quant(x)
        kernel, bias = self._kernel_bias(x)
        if self.fake_quant:
            kernel = fake_quant_weight(kernel, self.weight_quant)
        self.last_kernel = kernel.detach()
        return self._after_conv(self._qat_template._conv_forward(x, kernel, bias))

    def _after_conv(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class QATRepVGGBlock(EqKQATMixin, RepVGGBlock):
    """:class:`RepVGGBlock` under equivalent-kernel QAT."""

    _qat_base = RepVGGBlock

    def _after_conv(self, y: Tensor) -> Tensor:
        if self.se_position == 'pre':
            y = self.se(y)
        y = self.nonlinearity(y)
        if self.se_position == 'post':
            y = self.post_se(y)
        return y


class QATRepOptVGGBlock(EqKQATMixin, RepOptVGGBlock):
    """:class:`RepOptVGGBlock` under equivalent-kernel QAT."""

    _qat_base = RepOptVGGBlock

    def _after_conv(self, y: Tensor) -> Tensor:
        return self.relu(y)


class QATOREPARepVGGBlock(EqKQATMixin, OREPARepVGGBlock):
    """:class:`OREPARepVGGBlock` under equivalent-kernel QAT."""

    _qat_base = OREPARepVGGBlock

    def _after_conv(self, y: Tensor) -> Tensor:
        return self.nonlinearity(self.se(y))


QAT_BLOCK_TYPES: Dict[type, type] = {RepVGGBlock: QATRepVGGBlock,
                                     RepOptVGGBlock: QATRepOptVGGBlock,
                                     OREPARepVGGBlock: QATOREPARepVGGBlock}


def eqk_blocks(model: nn.Module) -> List[Tuple[str, EqKQATMixin]]:
    """``(path, block)`` of every block of ``model`` under equivalent-kernel QAT."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, EqKQATMixin)]


def prepare_eqk_qat(model: nn.Module, fake_quant: bool = True, averaging_constant: float = 0.01,
                    update_bn_stats: bool = True, weight_quant: str = 'per_channel'
                    ) -> Dict[str, List[str]]:
    """Put every covered block of the training-form ``model`` under equivalent-kernel QAT, in
    place (the block's class becomes its QAT subclass and it gains ``input_quant``; parameter
    names do not change). ``weight_quant``: int8 scales of the fused kernel, ``'per_channel'``
    or ``'per_tensor'``.

    Returns:
        dict: ``covered`` (paths) and ``uncovered`` (paths of other rep_mm blocks, which keep
        computing in floating point).

    Raises:
        QATError: a covered block is already converted (deploy form: nothing left to train
            through the fusion), the model is already prepared, or no block is covered.
    """
    if not isinstance(model, nn.Module):
        raise QATError(f'expected an nn.Module, got {type(model).__name__}')
    if eqk_blocks(model):
        raise QATError('the model is already prepared for equivalent-kernel QAT')
    try:
        check_weight_granularity(weight_quant)
    except ValueError as error:
        raise QATError(str(error)) from None
    covered, uncovered, deployed = [], [], []
    for name, module in model.named_modules():
        if any(name.startswith(f'{c}.') for c in covered):
            continue  # parts of a covered block are folded by it
        if type(module) in QAT_BLOCK_TYPES:
            (deployed if module.deploy else covered).append(name or '<root>')
        elif isinstance(module, ReparamBlock):
            uncovered.append(name or '<root>')
    if deployed:
        raise QATError(f'equivalent-kernel QAT trains the branches of the training-form model, '
                       f'but {len(deployed)} block(s) are converted (e.g. {deployed[0]}): build '
                       f'the model with deploy=False and load a training-form checkpoint (for a '
                       f'converted model use the after-conversion flow)')
    if not covered:
        raise QATError(f'no block covered by equivalent-kernel QAT in {type(model).__name__}: '
                       f'covered types are '
                       f'{", ".join(t.__name__ for t in QAT_BLOCK_TYPES)}')
    uncovered = [u for u in uncovered if not any(u.startswith(f'{c}.') for c in covered)]
    for name in covered:
        block = model if name == '<root>' else model.get_submodule(name)
        block.__class__ = QAT_BLOCK_TYPES[type(block)]
        block._qat_setup(fake_quant, averaging_constant, update_bn_stats, weight_quant)
    return dict(covered=covered, uncovered=uncovered)


def strip_eqk_qat(model: nn.Module) -> List[str]:
    """Undo :func:`prepare_eqk_qat` in place (blocks in either form): the blocks get their
    own class back and lose ``input_quant``; returns their paths."""
    names = []
    for name, block in eqk_blocks(model):
        del block.input_quant
        for attr in ('fake_quant', 'weight_quant', 'update_bn_stats', 'last_kernel',
                     '_qat_template'):
            block.__dict__.pop(attr, None)
        block.__class__ = block._qat_base
        names.append(name or '<root>')
    return names
