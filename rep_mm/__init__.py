"""rep_mm: structural re-parameterization for OpenMMLab.

Importing ``rep_mm`` registers its backbones, heads, hooks and optimizers in the ``rep_mm``
scope, so any MMPretrain / MMSegmentation / MMDetection config can use them after
``custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)``.
"""
from .version import __version__

from . import fusion, registry  # noqa: E402
from .reparam import (ReparamBlock, ReparamError, ReparamReport,  # noqa: E402
                      reparameterize, verify_equivalence)
from . import blocks, backbones, necks, heads, hooks, datasets  # noqa: E402,F401
from . import optim  # noqa: E402,F401
from . import integrations  # noqa: E402,F401
from .quantization import qat  # noqa: E402,F401  (registers rep_mm.QATModel / QATHook)

# Runner checkpoints load with weights_only=True in every toolbox once rep_mm is imported
integrations.allow_runner_checkpoints()
# mmdeploy's own torch2onnx then follows the deploy config's onnx_config.dynamo (TorchScript
# exporter by default); registered lazily, mmdeploy is not imported here
from .deploy.exporter import install as _install_mmdeploy_exporter  # noqa: E402
_install_mmdeploy_exporter()

__all__ = ['__version__', 'ReparamBlock', 'ReparamError', 'ReparamReport', 'reparameterize',
           'verify_equivalence', 'fusion', 'registry']
