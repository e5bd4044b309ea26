"""Helpers to check re-parameterization honestly: BN statistics that are not at their init.

A freshly built BatchNorm has mean 0, variance 1, weight 1, bias 0, so folding it is nearly the
identity and an equivalence check passes even for wrong fusion code. These helpers draw the
statistics and affine parameters of every BatchNorm (and other per-channel scales) at random.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['randomize_bn_statistics']


@torch.no_grad()
def randomize_bn_statistics(model: nn.Module, seed: Optional[int] = 0) -> nn.Module:
    """Give every BatchNorm of ``model`` random running statistics and affine parameters.

    ``running_var, weight ~ U(0.1, 1)`` and ``running_mean, bias ~ N(0, 0.1)`` (the scheme of
    the reference data, with a larger mean spread). Returns ``model`` for chaining.
    """
    generator = torch.Generator().manual_seed(seed if seed is not None else 0)

    def draw(tensor: torch.Tensor, uniform: bool) -> None:
        values = (torch.rand(tensor.shape, generator=generator, dtype=torch.float64) * 0.9 + 0.1
                  if uniform else
                  torch.randn(tensor.shape, generator=generator, dtype=torch.float64) * 0.1)
        tensor.copy_(values.to(tensor.dtype))

    for module in model.modules():
        if isinstance(module, _BatchNorm):
            if module.running_var is not None:
                draw(module.running_var, True)
                draw(module.running_mean, False)
            if module.weight is not None:
                draw(module.weight, True)
                draw(module.bias, False)
    return model
