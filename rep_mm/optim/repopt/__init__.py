"""RepOptimizer (https://arxiv.org/abs/2205.15242): scales, handlers, update rules, constructor.

* :mod:`.scales`: reading, matching and extracting the per-layer scales of a RepOpt model.
* :mod:`.handlers`: the per-family rule that turns scales into gradient multipliers and the
  initialisation of the target model.
* :mod:`.grad_mult`: applying the multipliers inside an optimizer step.
* :mod:`.sgd` / :mod:`.adamw`: ``RepOptSGD`` and ``RepOptAdamW``.
* :mod:`.constructor`: ``RepOptOptimWrapperConstructor`` (mm configs).
* :mod:`.init_hook`: ``RepOptInitHook`` (initialisation after ``load_from`` / resume is known).
"""
from .adamw import RepOptAdamW
from .constructor import CLIP_GRAD_MESSAGE, RepOptOptimWrapperConstructor, official_param_groups
from .handlers import (UPDATE_RULE_POWERS, RepOptGhostNetHandler, RepOptHandler,
                       RepOptVGGHandler, build_handler)
from .init_hook import RepOptInitHook
from .scales import ScalesError, extract_scales, load_scales, match_scales
from .sgd import RepOptSGD

__all__ = ['CLIP_GRAD_MESSAGE', 'RepOptOptimWrapperConstructor', 'official_param_groups',
           'UPDATE_RULE_POWERS', 'RepOptGhostNetHandler', 'RepOptHandler', 'RepOptVGGHandler',
           'build_handler', 'RepOptInitHook', 'RepOptAdamW', 'RepOptSGD', 'ScalesError',
           'extract_scales', 'load_scales', 'match_scales']
