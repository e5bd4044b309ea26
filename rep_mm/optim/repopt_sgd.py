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
from collections import defaultdict
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..registry import OPTIMIZERS

__all__ = ['RepOptSGD', 'check_grad_mult_map']


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


@OPTIMIZERS.register_module()
class RepOptSGD(torch.optim.SGD):
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

    def set_grad_mult_map(self, grad_mult_map: Dict[nn.Parameter, Tensor]) -> None:
        """Replace the multipliers (e.g. after rebuilding them on resume)."""
        self.grad_mult_map = check_grad_mult_map(grad_mult_map, self.param_groups)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets = defaultdict(list)
            for p in group['params']:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise RuntimeError('RepOptSGD does not support sparse gradients')
                    buckets[(p.device, p.dtype)].append(p)
            for params in buckets.values():
                self._update(group, params, group.get('foreach') is not False)
        return loss

    def _update(self, group: dict, params: List[Tensor], foreach: bool) -> None:
        lr, wd = group['lr'], group['weight_decay']
        momentum, dampening, nesterov = group['momentum'], group['dampening'], group['nesterov']
        mults = self.grad_mult_map
        with_mult = [p for p in params if p in mults]
        plain = [p for p in params if p not in mults]
        params = with_mult + plain
        grads = [p.grad for p in params]
        # d_p = grad * M, in place in p.grad (as the official code; no allocation) for the
        # multiplied; the plain ones are copied only if weight decay or nesterov writes into them
        if foreach and with_mult:
            torch._foreach_mul_(grads[:len(with_mult)], [mults[p] for p in with_mult])
        else:
            for g, p in zip(grads, with_mult):
                g.mul_(mults[p])
        d_ps = grads[:len(with_mult)]
        owned = len(d_ps)
        d_ps += grads[owned:]
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
