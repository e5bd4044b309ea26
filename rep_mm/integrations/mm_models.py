"""Whole mm models with a model-level ``switch_to_deploy`` (the method mmdeploy calls).

mmdeploy converts a model by calling ``model.backbone.switch_to_deploy()`` and, if present,
``model.switch_to_deploy()``. Stock mm models have no model-level method, so re-param blocks in
necks and heads would stay in training form. rep_mm registers thin subclasses of the common
model types that add it (and nothing else):

==========================  ======================================  ==============
rep_mm name                 base                                    toolbox
==========================  ======================================  ==============
``rep_mm.RepImageClassifier``  ``ImageClassifier``                  mmpretrain
``rep_mm.RepEncoderDecoder``   ``EncoderDecoder``                   mmseg
``rep_mm.RepRetinaNet``        ``RetinaNet``                        mmdet
``rep_mm.RepFasterRCNN``       ``FasterRCNN``                       mmdet
==========================  ======================================  ==============

Their state dicts are those of the base classes, so checkpoints move freely between the two.
Toolboxes that are not installed are skipped.
"""
import importlib
import warnings
from typing import Dict

from ..registry import MODELS
from ..reparam import reparameterize

__all__ = ['DeployableModelMixin', 'DEPLOYABLE_MODELS']


class DeployableModelMixin:
    """Adds ``switch_to_deploy()``: fold every re-param block of the whole model."""

    is_reparam_container = True

    def switch_to_deploy(self) -> None:
        reparameterize(self)


_BASES = {
    'RepImageClassifier': ('mmpretrain.models.classifiers', 'ImageClassifier'),
    'RepEncoderDecoder': ('mmseg.models.segmentors', 'EncoderDecoder'),
    'RepRetinaNet': ('mmdet.models.detectors', 'RetinaNet'),
    'RepFasterRCNN': ('mmdet.models.detectors', 'FasterRCNN'),
}
DEPLOYABLE_MODELS: Dict[str, type] = {}

for _name, (_module, _base) in _BASES.items():
    try:
        with warnings.catch_warnings():  # a deprecation inside a toolbox's own imports
            warnings.filterwarnings('ignore', message='`torch.jit.interface` is deprecated',
                                    category=FutureWarning)
            _base_cls = getattr(importlib.import_module(_module), _base)
    except (ImportError, AssertionError):  # toolbox missing (mmdet asserts its mmcv range)
        continue
    _cls = type(_name, (DeployableModelMixin, _base_cls), {
        '__doc__': f'``{_base}`` with a model-level ``switch_to_deploy()`` for mmdeploy.',
        '__module__': __name__})
    MODELS.register_module(name=_name, module=_cls)
    DEPLOYABLE_MODELS[_name] = _cls
