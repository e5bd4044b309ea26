"""mmengine optimizer-wrapper constructor for RepOptimizer (scales file -> RepOptSGD/AdamW).

Config::

    optim_wrapper = dict(
        constructor='rep_mm.RepOptOptimWrapperConstructor',
        scales='RepOpt-VGG-B1-scales.pth',            # released or extracted from Hyper-Search
        optimizer=dict(type='rep_mm.RepOptSGD', lr=0.1, momentum=0.9, nesterov=True,
                       weight_decay=4e-5))
    custom_hooks = [dict(type='rep_mm.RepOptInitHook')]   # the rule of initialisation

The constructor finds the RepOpt backbone in the model, matches the scales BY NAME (clear error
on missing / extra / mis-shaped keys), builds the grad-mult map on the parameters' device
(power 2 for RepOptSGD, 1 for RepOptAdamW), puts BN weights and all biases / 1-D parameters in
a group without weight decay (the official rule; a ``paramwise_cfg`` replaces it), and wraps
the optimizer in the configured wrapper (``OptimWrapper``, ``AmpOptimWrapper`` ...).
The Runner builds the optimizer BEFORE ``init_weights()`` and ``load_or_resume()``, so the
re-initialisation is left to :class:`~rep_mm.optim.repopt.init_hook.RepOptInitHook`
(``before_train``, only from scratch); the handler is kept as ``optim_wrapper.repopt_handler``
for it.
"""
import copy
from typing import List, Optional

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ...integrations.mm_build import unwrap_model
from ...registry import OPTIM_WRAPPER_CONSTRUCTORS
from .._checks import check_optimizer_numbers, check_paramwise_cfg
from .handlers import build_handler
from .adamw import RepOptAdamW
from .sgd import RepOptSGD

__all__ = ['RepOptOptimWrapperConstructor', 'CLIP_GRAD_MESSAGE', 'official_param_groups']

OPTIMIZERS_BY_NAME = {'RepOptSGD': (RepOptSGD, 'sgd'), 'RepOptAdamW': (RepOptAdamW, 'adamw')}
CLIP_GRAD_MESSAGE = (
    'clip_grad is refused with RepOptimizer: clipping rescales all gradients by one global '
    'factor computed from the raw gradients, but the grad mults change each gradient element '
    'differently, so the clipped update is no longer the update of the equivalent CSLA model '
    '(GR = CSLA breaks, and with it what the searched scales were searched for). Remove '
    'clip_grad from optim_wrapper; use a lower lr or a warmup to tame early steps.')


def official_param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """``[decay, no_decay]``: no weight decay on 1-D parameters (BN, scales) and biases."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith('.bias') else decay).append(param)
    return [dict(params=decay), dict(params=no_decay, weight_decay=0.0)]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RepOptOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Build RepOptSGD / RepOptAdamW with grad mults from a scales file (module docstring).

    Args:
        optim_wrapper_cfg (dict): ``optimizer`` (type ``RepOptSGD`` or ``RepOptAdamW``),
            ``scales`` (a path or dict, required), optional
            ``use_identity_scales_for_reinit`` (default True) and wrapper keys (``type``,
            ``accumulative_counts`` ...). ``clip_grad`` is refused.
        paramwise_cfg (dict, optional): mmengine's paramwise rules; default: the official
            rule (no decay on BN / biases / 1-D parameters).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        optim_wrapper_cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        if optim_wrapper_cfg.get('clip_grad') is not None:
            raise ValueError(CLIP_GRAD_MESSAGE)
        if 'scales' not in optim_wrapper_cfg:
            raise ValueError('RepOptOptimWrapperConstructor needs optim_wrapper.scales: the '
                             'path of a scales file (e.g. RepOpt-VGG-B1-scales.pth) or a dict')
        self.scales = optim_wrapper_cfg.pop('scales')
        self.use_identity_scales_for_reinit = optim_wrapper_cfg.pop(
            'use_identity_scales_for_reinit', True)
        optimizer_cfg = dict(optim_wrapper_cfg.get('optimizer') or {})
        name = str(optimizer_cfg.get('type', '')).split('.')[-1]
        if name not in OPTIMIZERS_BY_NAME:
            raise ValueError(f'optimizer type must be one of {list(OPTIMIZERS_BY_NAME)} (with or '
                             f"without the 'rep_mm.' prefix), got {optimizer_cfg.get('type')!r}")
        self.optimizer_class, self.update_rule = OPTIMIZERS_BY_NAME[name]
        check_optimizer_numbers(optimizer_cfg, type(self).__name__)
        check_paramwise_cfg(paramwise_cfg, type(self).__name__)
        self.use_paramwise = paramwise_cfg is not None
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        module = unwrap_model(model)
        handler = build_handler(module, self.scales,
                                use_identity_scales_for_reinit=self.use_identity_scales_for_reinit)
        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cfg.pop('type')
        weight_decay = optimizer_cfg.get('weight_decay', 0.0)
        if self.use_paramwise:
            groups: List[dict] = []
            self.add_params(groups, module)
        else:
            groups = official_param_groups(module, weight_decay)
        optimizer = self.optimizer_class(groups, grad_mult_map=handler.grad_mults(
            self.update_rule), **optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        wrapper_cfg.pop('optimizer', None)
        optim_wrapper = OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
        optim_wrapper.repopt_handler = handler
        return optim_wrapper
