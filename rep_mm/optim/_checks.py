"""Validation of the numbers an optimizer constructor reads from a config (multipliers, lr)."""
import math
from typing import Any, Mapping, Optional

__all__ = ['check_number', 'check_paramwise_cfg', 'check_optimizer_numbers']

# mmengine DefaultOptimWrapperConstructor's multiplier keys
PARAMWISE_MULT_KEYS = ('bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult',
                       'dwconv_decay_mult', 'flat_decay_mult', 'dcn_offset_lr_mult')
CUSTOM_MULT_KEYS = ('lr_mult', 'decay_mult')
OPTIMIZER_KEYS = ('lr', 'weight_decay', 'momentum')


def check_number(name: str, value: Any, allow_zero: bool = True,
                 meaning: str = '') -> float:
    """``value`` as float if it is a finite real number >= 0 (> 0 unless ``allow_zero``)."""
    bound = '>= 0' if allow_zero else '> 0'
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = f' ({meaning})' if meaning else ''
        raise ValueError(f'{name} must be {bound} and a finite number{what}, got {value!r}')
    return float(value)


def check_paramwise_cfg(paramwise_cfg: Optional[Mapping], owner: str) -> None:
    """Every multiplier of an mmengine ``paramwise_cfg`` is a finite number >= 0."""
    if not paramwise_cfg:
        return
    for key in PARAMWISE_MULT_KEYS:
        if key in paramwise_cfg:
            check_number(f'{owner}: paramwise_cfg.{key}', paramwise_cfg[key],
                         meaning='a multiplier of the base value; 0 switches it off')
    for name, entry in (paramwise_cfg.get('custom_keys') or {}).items():
        if not isinstance(entry, Mapping):
            raise TypeError(f'{owner}: paramwise_cfg.custom_keys[{name!r}] must be a dict with '
                            f'lr_mult / decay_mult, got {type(entry).__name__}')
        for key in CUSTOM_MULT_KEYS:
            if key in entry:
                check_number(f'{owner}: paramwise_cfg.custom_keys[{name!r}].{key}', entry[key],
                             meaning='a multiplier of the base value; 0 switches it off')


def check_optimizer_numbers(optimizer_cfg: Mapping, owner: str) -> None:
    """``lr`` / ``weight_decay`` / ``momentum`` of an optimizer config, when given."""
    for key in OPTIMIZER_KEYS:
        if key in optimizer_cfg and not callable(optimizer_cfg[key]):
            check_number(f'{owner}: optimizer.{key}', optimizer_cfg[key])
