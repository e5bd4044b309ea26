"""Optimizer-wrapper constructor with OREPA's stem learning rate and ImageNet decay rules.

The OREPA authors advise fine-tuning the deep linear stem (:class:`rep_mm.blocks.OREPALargeConv`,
the 7x7 stem of an OREPA ResNet) with its own learning rate downstream: after ImageNet training
its generator weights are distributed very differently from a plain conv's. Config::

    optim_wrapper = dict(
        constructor='rep_mm.OREPAOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
        paramwise_cfg=dict(stem_lr_mult=0.1,       # the stem's own lr = 0.1 * lr
                           orepa_decay=True,       # OREPA's ImageNet rule (below)
                           norm_decay_mult=0.0))   # any mmengine paramwise key still works

Keys of ``paramwise_cfg`` read here (the rest goes to mmengine's
``DefaultOptimWrapperConstructor`` unchanged):

* ``stem_lr_mult`` (float, default 1.0) and ``stem_decay_mult`` (float, optional): multiply
  the lr / weight decay of every stem parameter (after all other rules). Each stem parameter
  is its own param group, marked ``stem=True`` (visible in ``optimizer.param_groups``).
* ``stem_keys`` (list of str, optional): substrings of parameter names that mark the stem;
  default: every parameter inside an ``OREPALargeConv`` module.
* ``orepa_decay`` (bool, default False): the official ImageNet rule, no weight decay on
  parameters whose name contains ``bias``, ``bn`` or ``prior`` (so BN weights / biases and every
  bias), plus the branch scales ``vector`` at ``vector_decay_mult`` (default 0.0; the official
  script decays them, since its name rule misses them: set 1.0 to reproduce it exactly).
"""
import inspect
from typing import Dict, List, Optional

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from ..integrations.mm_build import unwrap_model
from ..registry import OPTIM_WRAPPER_CONSTRUCTORS
from ._checks import check_number, check_optimizer_numbers, check_paramwise_cfg

__all__ = ['OREPAOptimWrapperConstructor', 'OREPA_NO_DECAY_SUBSTRINGS']

OREPA_NO_DECAY_SUBSTRINGS = ('bias', 'bn', 'prior')
_OWN_KEYS = ('stem_lr_mult', 'stem_decay_mult', 'stem_keys', 'orepa_decay', 'vector_decay_mult')


def _stem_parameter_ids(model: nn.Module, stem_keys: Optional[List[str]]) -> Dict[int, str]:
    """``{id(param): name}`` of the stem (module docstring)."""
    if stem_keys:
        return {id(p): n for n, p in model.named_parameters() if any(k in n for k in stem_keys)}
    from ..blocks import OREPALargeConv
    found = {}
    for prefix, module in model.named_modules():
        if isinstance(module, OREPALargeConv):
            for name, param in module.named_parameters():
                found[id(param)] = f'{prefix}.{name}'
    return found


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class OREPAOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor plus a stem lr multiplier and OREPA's decay rule.

    Args:
        optim_wrapper_cfg (dict): as for mmengine (``optimizer``, wrapper ``type``, ...).
        paramwise_cfg (dict, optional): mmengine's keys plus those in the module docstring.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        rest = dict(paramwise_cfg or {})
        own = {key: rest.pop(key) for key in _OWN_KEYS if key in rest}
        owner = type(self).__name__
        check_paramwise_cfg(rest, owner)
        check_optimizer_numbers(dict(optim_wrapper_cfg.get('optimizer') or {}), owner)
        meaning = 'multiplies the base value; 0 freezes it'
        for key in ('stem_lr_mult', 'stem_decay_mult', 'vector_decay_mult'):
            if own.get(key) is not None:
                check_number(f'paramwise_cfg.{key}', own[key], meaning=meaning)
        super().__init__(optim_wrapper_cfg, rest)
        self.stem_lr_mult = float(own.get('stem_lr_mult', 1.0))
        self.stem_decay_mult = own.get('stem_decay_mult')
        self.stem_keys = own.get('stem_keys')
        self.orepa_decay = bool(own.get('orepa_decay', False))
        self.vector_decay_mult = float(own.get('vector_decay_mult', 0.0))
        if self.stem_keys is not None and (isinstance(self.stem_keys, str) or not all(
                isinstance(k, str) and k for k in self.stem_keys)):
            raise TypeError(f'paramwise_cfg.stem_keys must be a list of non-empty str, got '
                            f'{self.stem_keys!r}')
        needs_wd = self.orepa_decay or self.stem_decay_mult is not None
        if needs_wd and self.base_wd is None:
            raise ValueError('orepa_decay / stem_decay_mult need optimizer.weight_decay to be set')

    def _param_groups(self, model: nn.Module) -> List[dict]:
        groups: List[dict] = []
        self.add_params(groups, model)
        names = {id(p): n for n, p in model.named_parameters()}
        stem = _stem_parameter_ids(model, self.stem_keys)
        if self.stem_lr_mult != 1.0 and not stem:
            where = (f'no parameter name contains any of {self.stem_keys}' if self.stem_keys
                     else 'the model has no OREPALargeConv stem')
            raise ValueError(f'paramwise_cfg.stem_lr_mult={self.stem_lr_mult} but {where}; '
                             f'set stem_keys (e.g. ["backbone.stage0"]) to name the stem')
        for group in groups:
            param = group['params'][0]
            name = names.get(id(param), '')
            if self.orepa_decay:
                if any(s in name for s in OREPA_NO_DECAY_SUBSTRINGS):
                    group['weight_decay'] = 0.0
                elif name.rsplit('.', 1)[-1] == 'vector':
                    group['weight_decay'] = self.base_wd * self.vector_decay_mult
            if id(param) in stem:
                group['stem'] = True
                group['lr'] = group.get('lr', self.base_lr) * self.stem_lr_mult
                if self.stem_decay_mult is not None:
                    group['weight_decay'] = group.get('weight_decay', self.base_wd) * float(
                        self.stem_decay_mult)
        return groups

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = unwrap_model(model)
        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cls = optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cfg['type'])
        first_arg = next(iter(inspect.signature(optimizer_cls).parameters))
        optimizer_cfg[first_arg] = self._param_groups(model)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
