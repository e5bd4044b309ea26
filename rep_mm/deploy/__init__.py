"""Export a re-parameterized mm model to ONNX through MMDeploy and check it in onnxruntime.

:func:`export` takes an mmpretrain / mmseg / mmdet config that uses rep_mm blocks (and a
training-form or converted checkpoint, or random weights for smoke use) and writes a work dir::

    WORK_DIR/
      converted.pth        # {'state_dict', 'meta'}: every re-param block folded (deploy form,
                           #   meta['rep_mm_form'] == 'deploy')
      deploy_model.py      # the model config that rebuilds that deploy form (type
                           #   'rep_mm.ReparameterizedModel'); with converted.pth it is what
                           #   mmdeploy's torch2onnx was given
      deploy_cfg.py        # the mmdeploy deploy config used (copied, never the input file)
      end2end.onnx         # the exported graph (+ end2end.onnx.data with the dynamo exporter)
      input.png            # the real image the check ran on (a digit / digit scene by default)
      deploy.json pipeline.json detail.json   # mmdeploy SDK meta (export2SDK), then run in
                                              #   mmdeploy_runtime (report.json: sdk_check)
      report.json          # errors, graph checks, timings, versions

Steps: build the model like mmdeploy (``MODELS.build`` of ``cfg.model`` with the config's
``data_preprocessor``), load the checkpoint strictly with rep_mm's safe loader, convert EVERY
re-param block (:func:`rep_mm.reparameterize` on the whole model, so necks and heads too),
save, export with ``mmdeploy.apis.torch2onnx``, run onnxruntime and compare.

What is compared: the graph's outputs (after mmdeploy's rewrites: softmax scores for
classifiers, logits for segmentors with ``with_argmax=False``, ``dets``/``labels`` after NMS for
detectors) with the same forward in PyTorch eager mode inside mmdeploy's ``RewriterContext``,
for the converted model (export error) and for the training-form model (end-to-end error, the
one held against ``tolerance``). Errors are ``max |a - b|`` and ``max |a - b| / max |a|`` over all
outputs. Detectors: the boxes after NMS are compared when both sides keep the same boxes with
the same labels; the raw head outputs before NMS are always compared too (``pre_nms``), since a
near-tie at the score threshold can change the kept boxes. Checks live in
:mod:`rep_mm.deploy.onnx_checks`.

Graph checks: no ``BatchNormalization`` node, and every fused block maps to exactly one ``Conv``
node (node scopes of the TorchScript exporter name the module path).

Modules (one job each): :mod:`.model` (the registered ``rep_mm.ReparameterizedModel`` builder
and the deploy-form model config), :mod:`.tasks` (codebases and shipped deploy configs),
:mod:`.inputs` (input checks, default image), :mod:`.weights` (checkpoint / random weights),
:mod:`.prepare` (the steps before ONNX: build, load, input, convert, ``converted.pth``),
:mod:`.runtime` (torch2onnx, onnxruntime), :mod:`.onnx_checks` (output errors through
:mod:`rep_mm.verify.compare`), :mod:`.checks` (all comparisons and the verdict), :mod:`.graph`
(the graph's structure), :mod:`.sdk` (SDK meta), :mod:`.sdk_check` (the work dir run in the
mmdeploy SDK vs PyTorch), :mod:`.dynamic` (graphs with dynamic axes run at several sizes),
:mod:`.exporter` (the mmdeploy rewriter of ``torch.onnx.export`` that picks the deploy config's
exporter, also for mmdeploy's own ``torch2onnx``), :mod:`.report` (``report.json``),
:mod:`.progress` (named steps), :mod:`.errors`, :mod:`.pipeline` (:func:`export`, step by step)
and :mod:`.cli` (``rep-mm export``). Importing this package registers the builder
(``deploy_model.py`` lists ``rep_mm.deploy`` in ``custom_imports``).
"""
from .cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, build_parser, main
from .errors import DeployError, ExportFailed
from .exporter import install as install_exporter
from .inputs import WORK_DIR_OUTPUTS, sample_image
from .model import build_reparameterized_model, deploy_model_config
from .pipeline import export
from .progress import STEPS
from .report import DEFAULT_TOLERANCE, ExportReport
from .tasks import DEPLOY_CONFIG_DIR, TASKS, codebase_of, deploy_config_for

__all__ = ['export', 'main', 'build_parser', 'DeployError', 'ExportFailed', 'ExportReport',
           'EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'DEFAULT_TOLERANCE', 'STEPS',
           'WORK_DIR_OUTPUTS', 'sample_image', 'build_reparameterized_model',
           'deploy_model_config', 'install_exporter', 'TASKS', 'DEPLOY_CONFIG_DIR',
           'codebase_of', 'deploy_config_for']

install_exporter()  # mmdeploy's torch2onnx then uses the deploy config's exporter
