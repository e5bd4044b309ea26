"""rep_mm: structural re-parameterization for OpenMMLab.

Importing ``rep_mm`` registers its backbones, heads, hooks and optimizers in the ``rep_mm``
scope, so any MMPretrain / MMSegmentation / MMDetection config can use them after
``custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)``.
"""
__version__ = '0.1.0'

from . import fusion, registry  # noqa: E402
from .reparam import (ReparamBlock, ReparamReport, reparameterize,  # noqa: E402
                      verify_equivalence)
from . import blocks, backbones, necks, heads, hooks, datasets, models  # noqa: E402,F401
from . import optim  # noqa: E402,F401

__all__ = ['__version__', 'ReparamBlock', 'ReparamReport', 'reparameterize',
           'verify_equivalence', 'fusion', 'registry']
