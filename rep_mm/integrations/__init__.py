"""What rep_mm adds to the OpenMMLab stack so that the toolboxes' own entry points work unchanged.

* :mod:`.runner_checkpoints`: importing rep_mm allow-lists, for ``torch.load(weights_only=True)``,
  exactly the globals an mmengine Runner checkpoint pickles; the toolboxes' own ``test.py``,
  ``Runner(load_from=...)``, ``get_model``, ``init_model``, ``init_detector`` and mmdeploy's
  ``torch2onnx`` then load rep_mm checkpoints with ``weights_only`` kept on.
* :mod:`.data_root`: mmengine's loops as ``rep_mm.EpochBasedTrainLoop`` / ``IterBasedTrainLoop`` /
  ``ValLoop`` / ``TestLoop``, which move every dataset with the config file's ``data_root`` to
  the one given on the command line (``--cfg-options data_root=DIR``), whichever script runs it.
* :mod:`.mm_build`: :func:`build_model` (a config's model in its scope) and
  :func:`unwrap_model` (the model inside DDP and other wrappers), used by every entry point.
* :mod:`.mm_models`: the toolboxes' model types with a model-level ``switch_to_deploy()``
  (``rep_mm.RepImageClassifier``, ``RepEncoderDecoder``, ``RepRetinaNet``, ``RepFasterRCNN``).
* :mod:`.official`: the official RepVGG / RepVGGplus releases' classifier layout
  (``OfficialClassifier``; ``rep-mm convert --arch``) and their loading.
* :mod:`.stock_backbones`: ACB / DBB / OREPA blocks swapped into a stock mm backbone
  (``type='rep_mm.ReparamWrapped'``), and folded back into a stock checkpoint after training
  (``python -m rep_mm.integrations.stock_backbones``).
"""
from .data_root import (EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop,
                        follow_data_root)
from .mm_build import build_model, unwrap_model
from .mm_models import DEPLOYABLE_MODELS, DeployableModelMixin
from .runner_checkpoints import allow_runner_checkpoints
from .stock_backbones import build_reparam_wrapped  # registers rep_mm.ReparamWrapped

__all__ = ['EpochBasedTrainLoop', 'IterBasedTrainLoop', 'ValLoop', 'TestLoop',
           'follow_data_root', 'allow_runner_checkpoints', 'DEPLOYABLE_MODELS',
           'DeployableModelMixin', 'build_model', 'unwrap_model', 'build_reparam_wrapped']
