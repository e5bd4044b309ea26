"""Fake quantization used by both QAT flows, matching onnxruntime's static QDQ int8 scheme.

* **Weights** (``W``: ``(C_out, C_in // g, kh, kw)``): symmetric int8 on ``[-127, 127]``, zero
  point 0, per output channel (default, ``rep-mm quantize``'s default) or per tensor (one
  scale, ``rep-mm quantize --per-tensor``)::

      s_c = max|W_c| / 127          (per channel; per tensor: s = max|W| / 127; computed in
                                     float64 and rounded once to float32, as onnxruntime's
                                     ``compute_scale_zp`` does; 1.0 for an all-zero channel)
      fq(W)_c = s_c * clamp(round_half_even(W_c / s_c), -127, 127)

  recomputed from the current kernel in every forward (no state), by
  ``torch.fake_quantize_per_channel_affine`` / ``torch.fake_quantize_per_tensor_affine``
  (straight-through gradient).
* **Activations** (a conv's input ``x``: any shape): per tensor, asymmetric uint8 on
  ``[0, 255]``; ``[min, max]`` is observed in training mode as an exponential moving average
  (``torch.ao.quantization.MovingAverageMinMaxObserver``), widened to contain 0::

      s = (max - min) / 255,   z = clamp(0 - round(min / s), 0, 255)
      fq(x) = s * (clamp(round(x / s) + z, 0, 255) - z)

  by ``torch.fake_quantize_per_tensor_affine``. Before the first observation it passes ``x``
  through unchanged.
"""
from typing import Tuple

import torch
from torch import Tensor, nn
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

__all__ = ['WEIGHT_QMIN', 'WEIGHT_QMAX', 'ACT_QMIN', 'ACT_QMAX', 'WEIGHT_GRANULARITIES',
           'check_weight_granularity', 'weight_scale', 'fake_quant_weight',
           'quantize_weight_int8', 'ActivationQuantizer']

WEIGHT_QMIN, WEIGHT_QMAX = -127, 127
ACT_QMIN, ACT_QMAX = 0, 255
WEIGHT_GRANULARITIES = ('per_channel', 'per_tensor')


def check_weight_granularity(value: str) -> str:
    """``value`` if it is one of :data:`WEIGHT_GRANULARITIES`, else ``ValueError``."""
    if value not in WEIGHT_GRANULARITIES:
        raise ValueError(f'weight_quant must be one of {WEIGHT_GRANULARITIES}, got {value!r}')
    return value


def _check_kernel(weight: Tensor) -> None:
    if not isinstance(weight, Tensor) or weight.dim() < 2 or not weight.is_floating_point():
        raise ValueError(f'expected a floating conv kernel of shape (C_out, C_in // g, ...), got '
                         f'{type(weight).__name__}'
                         f'{list(weight.shape) if isinstance(weight, Tensor) else ""}')


def weight_scale(weight: Tensor, granularity: str = 'per_channel') -> Tensor:
    """Symmetric int8 scales ``s = max|W| / 127`` (float32): per output channel (shape
    ``(C_out,)``) or, with ``granularity='per_tensor'``, one scale (shape ``(1,)``).

    The division is done in float64 and rounded once to float32, exactly as onnxruntime's
    ``compute_scale_zp(-a, a, -127, 127, symmetric=True)``; a channel (tensor) with ``max|W|``
    below the smallest normal float32 gets scale 1.0 (onnxruntime's rule)."""
    _check_kernel(weight)
    absmax = weight.detach().abs().flatten(1).amax(dim=1).double()
    if check_weight_granularity(granularity) == 'per_tensor':
        absmax = absmax.amax().reshape(1)
    scale = (absmax - (-absmax)) / float(WEIGHT_QMAX - WEIGHT_QMIN)  # onnxruntime's dr / dq
    tiny = torch.finfo(torch.float32).tiny
    return torch.where(scale < tiny, torch.ones_like(scale), scale).float()


def fake_quant_weight(weight: Tensor, granularity: str = 'per_channel') -> Tensor:
    """``fq(W)``: symmetric int8 fake quantization of a conv kernel, per output channel or
    per tensor (same shape and dtype as ``weight``; straight-through gradient inside
    ``[-127 s, 127 s]``, i.e. everywhere since ``s`` comes from ``max|W|``)."""
    scale = weight_scale(weight, granularity).to(weight.device)
    if granularity == 'per_tensor':
        zero = torch.zeros(1, dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_tensor_affine(weight, scale, zero, WEIGHT_QMIN,
                                                     WEIGHT_QMAX)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, WEIGHT_QMIN,
                                                  WEIGHT_QMAX)


def quantize_weight_int8(weight: Tensor, granularity: str = 'per_channel'
                         ) -> Tuple[Tensor, Tensor]:
    """Real int8 quantization of a kernel with the scales of :func:`weight_scale`:
    ``(q, s)`` with ``q`` int8 of ``weight``'s shape and ``s`` float32 (``(C_out,)`` per
    channel, ``(1,)`` per tensor); ``q * s`` (broadcast over channels) is the dequantized
    kernel.

    Uses ``torch.ops.quantized_decomposed.quantize_per_channel`` / ``quantize_per_tensor``, the
    quantize ops of torch's PT2E flow (registered by ``torch.ao.quantization.fx._decomposed``;
    no FX API is used)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers quantized_decomposed
    scale = weight_scale(weight, granularity)
    data = weight.detach().float().cpu()
    if granularity == 'per_tensor':
        q = torch.ops.quantized_decomposed.quantize_per_tensor(
            data, float(scale[0]), 0, WEIGHT_QMIN, WEIGHT_QMAX, torch.int8)
        return q, scale
    zero = torch.zeros(weight.shape[0], dtype=torch.int64)
    q = torch.ops.quantized_decomposed.quantize_per_channel(
        data, scale, zero, 0, WEIGHT_QMIN, WEIGHT_QMAX, torch.int8)
    return q, scale


class ActivationQuantizer(nn.Module):
    """Per-tensor uint8 asymmetric fake quantization of a conv input ``x`` (any shape, returned
    unchanged in shape); EMA min/max observed in training mode (module docstring).

    Args:
        averaging_constant (float): EMA weight ``c`` of a new batch's min / max,
            ``min <- min + c (min_batch - min)``. Default 0.01.
        enabled (bool): fake-quantize (else observe only and pass through). Default True.
    """

    def __init__(self, averaging_constant: float = 0.01, enabled: bool = True) -> None:
        super().__init__()
        if not 0 < averaging_constant <= 1:
            raise ValueError(f'averaging_constant must be in (0, 1], got {averaging_constant!r}')
        self.observer = MovingAverageMinMaxObserver(
            averaging_constant=averaging_constant, dtype=torch.quint8,
            qscheme=torch.per_tensor_affine, quant_min=ACT_QMIN, quant_max=ACT_QMAX)
        self.enabled = enabled

    @property
    def initialized(self) -> bool:
        """True once a range has been observed."""
        return bool(torch.isfinite(self.observer.min_val).all())

    def observe(self, x: Tensor) -> None:
        """Update the EMA range with ``x`` (no fake quantization)."""
        self.observer(x.detach())

    def qparams(self) -> Tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` of the observed range (float32 ``(1,)``, int32 ``(1,)``)."""
        if not self.initialized:
            raise RuntimeError('ActivationQuantizer: no range observed yet (run it in training '
                               'mode or call observe() first)')
        scale, zero = self.observer.calculate_qparams()
        return scale.float(), zero.to(torch.int32)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.observe(x)
        if not self.enabled or not self.initialized:
            return x
        scale, zero = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale.to(x.device), zero.to(x.device),
                                                     ACT_QMIN, ACT_QMAX)

    def extra_repr(self) -> str:
        state = (f'[{float(self.observer.min_val):.4g}, {float(self.observer.max_val):.4g}]'
                 if self.initialized else 'no range yet')
        return f'uint8 per-tensor, enabled={self.enabled}, range={state}'
