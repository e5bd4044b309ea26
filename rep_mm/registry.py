"""rep_mm's registries: children of mmengine's root registries under the scope ``rep_mm``.

Any OpenMMLab toolbox reaches them through the root registry with a scope prefix, e.g.
``backbone=dict(type='rep_mm.RepVGG', arch='A0')`` in an mmseg or mmdet config, after
``custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)``.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='rep_mm', locations=['rep_mm'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='rep_mm', locations=['rep_mm.hooks'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope='rep_mm',
                      locations=['rep_mm.optim'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='rep_mm',
                                      locations=['rep_mm.optim'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='rep_mm',
                          locations=['rep_mm.optim'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='rep_mm',
                    locations=['rep_mm.datasets'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope='rep_mm',
                locations=['rep_mm.integrations'])
