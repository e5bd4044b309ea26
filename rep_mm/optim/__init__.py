"""RepOptimizer (https://arxiv.org/abs/2205.15242): scales, handlers, update rules, constructor.

Importing this package registers ``RepOptSGD`` / ``RepOptAdamW`` (``rep_mm`` OPTIMIZERS),
``RepOptOptimWrapperConstructor`` (OPTIM_WRAPPER_CONSTRUCTORS), ``RepOptInitHook`` (HOOKS) and
``CPUAmpOptimWrapper`` (OPTIM_WRAPPERS; bfloat16 AMP on the CPU).
"""
from .amp import CPUAmpOptimWrapper
from .constructor import CLIP_GRAD_MESSAGE, RepOptOptimWrapperConstructor, official_param_groups
from .handlers import (UPDATE_RULE_POWERS, RepOptGhostNetHandler, RepOptHandler,
                       RepOptVGGHandler, build_handler)
from .init_hook import RepOptInitHook
from .repopt_adamw import RepOptAdamW
from .repopt_sgd import RepOptSGD
from .scales import ScalesError, extract_scales, load_scales, match_scales

__all__ = ['CPUAmpOptimWrapper', 'CLIP_GRAD_MESSAGE', 'RepOptOptimWrapperConstructor', 'official_param_groups',
           'UPDATE_RULE_POWERS', 'RepOptGhostNetHandler', 'RepOptHandler', 'RepOptVGGHandler',
           'build_handler', 'RepOptInitHook', 'RepOptAdamW', 'RepOptSGD', 'ScalesError',
           'extract_scales', 'load_scales', 'match_scales']
from .stem_lr import OREPAOptimWrapperConstructor  # noqa: E402,F401
