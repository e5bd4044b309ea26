"""Optimization: RepOptimizer (:mod:`.repopt`), OREPA stem learning rates, CPU AMP.

Importing this package registers ``RepOptSGD`` / ``RepOptAdamW`` (``rep_mm`` OPTIMIZERS),
``RepOptOptimWrapperConstructor`` and ``OREPAOptimWrapperConstructor``
(OPTIM_WRAPPER_CONSTRUCTORS), ``RepOptInitHook`` (HOOKS) and ``CPUAmpOptimWrapper``
(OPTIM_WRAPPERS; bfloat16 AMP on the CPU).
"""
from .amp import CPUAmpOptimWrapper
from .orepa_stem import OREPAOptimWrapperConstructor
from .repopt import (CLIP_GRAD_MESSAGE, UPDATE_RULE_POWERS, RepOptAdamW, RepOptGhostNetHandler,
                     RepOptHandler, RepOptInitHook, RepOptOptimWrapperConstructor, RepOptSGD,
                     RepOptVGGHandler, ScalesError, build_handler, extract_scales, load_scales,
                     match_scales, official_param_groups)

__all__ = ['CPUAmpOptimWrapper', 'OREPAOptimWrapperConstructor', 'CLIP_GRAD_MESSAGE',
           'RepOptOptimWrapperConstructor', 'official_param_groups', 'UPDATE_RULE_POWERS',
           'RepOptGhostNetHandler', 'RepOptHandler', 'RepOptVGGHandler', 'build_handler',
           'RepOptInitHook', 'RepOptAdamW', 'RepOptSGD', 'ScalesError', 'extract_scales',
           'load_scales', 'match_scales']
