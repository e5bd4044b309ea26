"""RepOptAdamW: AdamW with RepOptimizer's grad mults, applied as the official code does.

Per parameter ``p`` with multiplier ``M`` (1 when not in the map), step ``t``::

    g  = grad * M                                    # BEFORE the moments
    p *= 1 - lr * weight_decay                       # decoupled weight decay
    m  = beta1 * m + (1 - beta1) * g                 # (a lerp, as torch's AdamW)
    v  = beta2 * v + (1 - beta2) * g * g
    p -= lr / (1 - beta1^t) * (m * M) / (sqrt(v) / sqrt(1 - beta2^t) + eps)   # M AGAIN

Multi-tensor (``_foreach``) kernels throughout. As in the official code, ``p.grad`` of a
multiplied parameter holds ``grad * M`` after ``step()``. The state
(``step``, ``exp_avg``, ``exp_avg_sq``) has torch AdamW's layout; the map is never saved.
"""
import math
from typing import Dict, Hashable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ...registry import OPTIMIZERS
from .grad_mult import GradMultOptimizerMixin, apply_grad_mults, check_grad_mult_map

__all__ = ['RepOptAdamW']


@OPTIMIZERS.register_module()
class RepOptAdamW(GradMultOptimizerMixin, torch.optim.AdamW):
    """AdamW with per-element gradient multipliers (RepOptimizer, arXiv 2205.15242).

    Args:
        params: parameters or parameter groups, as for ``torch.optim.AdamW``.
        lr, betas, eps, weight_decay: as ``torch.optim.AdamW``.
        grad_mult_map (dict, optional): ``{Parameter: Tensor}`` multipliers, e.g.
            ``RepOptVGGHandler.grad_mults('adamw')``.
        foreach (bool, optional): multi-tensor kernels (default True); False loops per tensor.

    ``amsgrad``, ``maximize``, ``capturable``, ``differentiable`` and ``fused`` are not supported.
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 grad_mult_map: Optional[Dict[nn.Parameter, Tensor]] = None,
                 foreach: Optional[bool] = None, maximize: bool = False) -> None:
        if amsgrad or maximize:
            raise ValueError('RepOptAdamW supports neither amsgrad nor maximize (the official '
                             'RepOptimizer AdamW has neither)')
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=foreach)
        self.grad_mult_map = check_grad_mult_map(grad_mult_map, self.param_groups)

    def _bucket_key(self, param: Tensor) -> Hashable:
        """Set up torch AdamW's state on the first step, count the step; key by the step."""
        state = self.state[param]
        if not state:
            state['step'] = torch.tensor(0.0, dtype=torch.float32)
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state['step'] += 1
        return param.device, param.dtype, int(state['step'].item())

    def _update(self, group: dict, params: List[Tensor], key: Hashable, foreach: bool) -> None:
        lr, wd, eps = group['lr'], group['weight_decay'], group['eps']
        beta1, beta2 = group['betas']
        step = key[2]
        # g = grad * M in p.grad (as the official code), the multiplied first in ``params``
        params, m_list = apply_grad_mults(params, self.grad_mult_map, foreach)
        k = len(m_list)
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]['exp_avg'] for p in params]
        exp_avg_sqs = [self.state[p]['exp_avg_sq'] for p in params]
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        step_size, bias2_sqrt = lr / bias1, math.sqrt(bias2)
        if not foreach:
            for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / bias2_sqrt).add_(eps)
                numer = m * m_list[i] if i < k else m
                p.addcdiv_(numer, denom, value=-step_size)
            return
        if wd != 0:
            torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        # (m * M) / (sqrt(v) / b2 + eps) * lr / b1 == m / ((sqrt(v) + eps * b2) / M) * lr * b2 / b1
        # with b2 = sqrt(bias correction 2): one pass fewer than torch's, M folded into the
        # denominator in place (no extra tensor); M = 0 gives an infinite denominator, step 0
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denoms, eps * bias2_sqrt)
        if k:
            torch._foreach_div_(denoms[:k], m_list)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, value=-step_size * bias2_sqrt)
