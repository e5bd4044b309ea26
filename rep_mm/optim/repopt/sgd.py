"""RepOptSGD: torch SGD whose gradients are multiplied by RepOptimizer's grad mults.

Update rule (the official RepOptimizerSGD, per parameter ``p`` with multiplier ``M``, 1 if
``p`` is not in the map)::

    d_p = grad * M + weight_decay * p
    buf = d_p (first step)  |  buf = momentum * buf + (1 - dampening) * d_p
    d_p = d_p + momentum * buf (nesterov)  |  d_p = buf
    p  -= lr * d_p

Implemented with torch's multi-tensor (``_foreach``) kernels: the multiplier is one fused
in-place multiply of ``p.grad``, and weight decay / nesterov then add into that buffer instead
of a copy (torch copies), so a step costs about a torch SGD step (B1: 1.03x measured). So, for
a multiplied parameter, ``p.grad`` holds the applied direction ``d_p`` after ``step()`` (the
official code also overwrites it); other gradients are left untouched. The state
(``momentum_buffer``) has torch SGD's layout, so checkpoints interchange; the map itself is
never saved: the constructor rebuilds it.
"""
from typing import Dict, Hashable, List, Optional

import torch
from torch import Tensor, nn

from ...registry import OPTIMIZERS
from .grad_mult import GradMultOptimizerMixin, apply_grad_mults, check_grad_mult_map

__all__ = ['RepOptSGD', 'check_grad_mult_map']


@OPTIMIZERS.register_module()
class RepOptSGD(GradMultOptimizerMixin, torch.optim.SGD):
    """SGD with per-element gradient multipliers (RepOptimizer, arXiv 2205.15242).

    Args:
        params: parameters or parameter groups, as for ``torch.optim.SGD``.
        lr, momentum, dampening, weight_decay, nesterov: as ``torch.optim.SGD``.
        grad_mult_map (dict, optional): ``{Parameter: Tensor}`` of multipliers (same shape as
            the parameter), e.g. ``RepOptVGGHandler.grad_mults('sgd')``.
        foreach (bool, optional): multi-tensor kernels (default True); False loops per tensor.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *,
                 grad_mult_map: Optional[Dict[nn.Parameter, Tensor]] = None,
                 foreach: Optional[bool] = None, maximize: bool = False) -> None:
        if maximize:
            raise ValueError('RepOptSGD does not support maximize=True')
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, foreach=foreach)
        self.grad_mult_map = check_grad_mult_map(grad_mult_map, self.param_groups)

    def _update(self, group: dict, params: List[Tensor], key: Hashable, foreach: bool) -> None:
        lr, wd = group['lr'], group['weight_decay']
        momentum, dampening, nesterov = group['momentum'], group['dampening'], group['nesterov']
        # d_p = grad * M, in place in p.grad for the multiplied (first in ``params``); the
        # plain ones are copied only if weight decay or nesterov writes into them
        params, m_list = apply_grad_mults(params, self.grad_mult_map, foreach)
        d_ps = [p.grad for p in params]
        owned = len(m_list)
        if wd != 0:
            if owned:
                self._add(d_ps[:owned], params[:owned], wd, foreach, in_place=True)
            d_ps[owned:] = self._add(d_ps[owned:], params[owned:], wd, foreach, in_place=False)
            owned = len(d_ps)
        if momentum != 0:
            bufs, fresh = [], []
            for p, d_p in zip(params, d_ps):
                state = self.state[p]
                buf = state.get('momentum_buffer')
                if buf is None:
                    buf = torch.clone(d_p).detach()
                    state['momentum_buffer'] = buf
                    fresh.append(True)
                else:
                    fresh.append(False)
                bufs.append(buf)
            old = [b for b, f in zip(bufs, fresh) if not f]
            if old:
                new_d = [d for d, f in zip(d_ps, fresh) if not f]
                if foreach:
                    torch._foreach_mul_(old, momentum)
                    torch._foreach_add_(old, new_d, alpha=1 - dampening)
                else:
                    for b, d in zip(old, new_d):
                        b.mul_(momentum).add_(d, alpha=1 - dampening)
            if nesterov:
                if owned < len(d_ps):
                    d_ps[owned:] = self._add(d_ps[owned:], bufs[owned:], momentum, foreach,
                                             in_place=False)
                if owned:
                    self._add(d_ps[:owned], bufs[:owned], momentum, foreach, in_place=True)
            else:
                d_ps = bufs
        if foreach:
            torch._foreach_add_(params, d_ps, alpha=-lr)
        else:
            for p, d in zip(params, d_ps):
                p.add_(d, alpha=-lr)

    @staticmethod
    def _add(targets: List[Tensor], others: List[Tensor], alpha: float, foreach: bool,
             in_place: bool) -> List[Tensor]:
        """``targets + alpha * others``, in place or as new tensors."""
        if not targets:
            return targets
        if foreach:
            if in_place:
                torch._foreach_add_(targets, others, alpha=alpha)
                return targets
            return list(torch._foreach_add(targets, others, alpha=alpha))
        if in_place:
            for t, o in zip(targets, others):
                t.add_(o, alpha=alpha)
            return targets
        return [t.add(o, alpha=alpha) for t, o in zip(targets, others)]
