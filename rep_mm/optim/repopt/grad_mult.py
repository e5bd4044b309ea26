"""What RepOptSGD and RepOptAdamW share: the grad-mult map, the step loop, ``grad *= M``.

RepOptimizer (arXiv 2205.15242) multiplies the gradient of a parameter ``p`` element-wise by a
constant ``M`` (same shape as ``p``, from the scales of the hs model) before the update rule;
parameters not in the map keep ``M = 1``. The map is keyed by the parameters themselves.
"""
from collections import defaultdict
from typing import Dict, Hashable, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ['check_grad_mult_map', 'apply_grad_mults', 'GradMultOptimizerMixin']


def check_grad_mult_map(grad_mult_map: Optional[Dict[nn.Parameter, Tensor]],
                        param_groups: List[dict]) -> Dict[nn.Parameter, Tensor]:
    """Validate a ``{Parameter: multiplier}`` map against the optimizer's parameters."""
    if grad_mult_map is None:
        return {}
    if not isinstance(grad_mult_map, dict):
        raise TypeError(f'grad_mult_map must be a dict {{Parameter: Tensor}} keyed by the '
                        f'parameters themselves, got {type(grad_mult_map).__name__}')
    params = {id(p) for group in param_groups for p in group['params']}
    for param, mult in grad_mult_map.items():
        if not isinstance(param, torch.Tensor) or not isinstance(mult, torch.Tensor):
            raise TypeError('grad_mult_map keys must be Parameters and values Tensors (keyed by '
                            'identity, not by name)')
        if id(param) not in params:
            raise ValueError(f'grad_mult_map holds a parameter of shape {tuple(param.shape)} '
                             'that is not optimised by this optimizer')
        if mult.shape != param.shape:
            raise ValueError(f'grad mult shape {tuple(mult.shape)} differs from its parameter '
                             f'shape {tuple(param.shape)}')
    return {p: m.to(device=p.device, dtype=p.dtype) for p, m in grad_mult_map.items()}


def apply_grad_mults(params: List[Tensor], mults: Dict[nn.Parameter, Tensor],
                     foreach: bool) -> Tuple[List[Tensor], List[Tensor]]:
    """``p.grad *= M`` in place (no allocation, as the official code) for ``p`` in ``mults``.

    Returns ``(ordered, m_list)``: ``params`` with the multiplied ones first (in their order),
    and their multipliers, so ``ordered[:len(m_list)]`` are the multiplied parameters.
    """
    with_mult = [p for p in params if p in mults]
    m_list = [mults[p] for p in with_mult]
    grads = [p.grad for p in with_mult]
    if foreach and grads:
        torch._foreach_mul_(grads, m_list)
    else:
        for g, m in zip(grads, m_list):
            g.mul_(m)
    return with_mult + [p for p in params if p not in mults], m_list


class GradMultOptimizerMixin:
    """The grad-mult map and the step loop of a torch optimizer with multipliers.

    ``step`` groups the parameters with a (dense) gradient of each param group by
    ``_bucket_key(p)`` (which may also set up ``self.state[p]``) and calls
    ``_update(group, params, key, foreach)`` once per bucket.
    """

    grad_mult_map: Dict[nn.Parameter, Tensor]

    def set_grad_mult_map(self, grad_mult_map: Dict[nn.Parameter, Tensor]) -> None:
        """Replace the multipliers (e.g. after rebuilding them on resume)."""
        self.grad_mult_map = check_grad_mult_map(grad_mult_map, self.param_groups)

    def _bucket_key(self, param: Tensor) -> Hashable:
        """Parameters of one key are updated together by one multi-tensor call."""
        return param.device, param.dtype

    def _update(self, group: dict, params: List[Tensor], key: Hashable, foreach: bool) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets = defaultdict(list)
            for p in group['params']:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f'{type(self).__name__} does not support sparse gradients')
                buckets[self._bucket_key(p)].append(p)
            for key, params in buckets.items():
                self._update(group, params, key, group.get('foreach') is not False)
        return loss
