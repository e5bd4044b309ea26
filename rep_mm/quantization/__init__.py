"""Post-training int8 quantization of re-parameterized models with onnxruntime (issue 13).

:func:`quantize` / ``rep-mm quantize CONFIG CKPT --work-dir D``, for mmpretrain classifiers and
mmseg segmentors that use rep_mm blocks:

1. fold every block and export through mmdeploy exactly as ``rep-mm export`` does
   (:func:`rep_mm.deploy.export`: ``end2end.onnx``, ``converted.pth``, ``report.json``);
   a given ``--onnx`` graph must be folded (no BatchNormalization, one Conv per block);
2. calibration images from the config's OWN ``train_dataloader`` (its train pipeline, a
   ``Resize`` fitted to the static input size by mmdeploy's rule) through the model's
   ``data_preprocessor``: float32 ``(1, 3, H, W)``, the fp32 graph's input;
3. ``quant_pre_process`` + ``quantize_static`` (QDQ, int8 per-channel weights, uint8
   activations, MinMax) -> ``end2end_int8.onnx``; the graph onnxruntime optimises from it must
   hold int8 kernels (``QLinearConv`` ...);
4. fp32 and int8 graphs evaluated with the config's ``val_evaluator`` on its val set
   (outputs packed back into data samples as mmdeploy's backend models do);
5. onnxruntime latency of both (batch 1, fixed threads, interleaved medians) and end to end
   with preprocessing; everything in ``quant_report.json``.

Modules (one job each): :mod:`.data` (config, pipelines, datasets, preprocessing),
:mod:`.calibration` (the calibration data reader), :mod:`.ort_quant` (onnxruntime
quantization and the int8-kernel check), :mod:`.evaluate` (metrics), :mod:`.latency`
(sessions, interleaved timing), :mod:`.report` (``quant_report.json``), :mod:`.pipeline`
(:func:`quantize`) and :mod:`.cli` (``main(argv)``).
"""
from .cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, build_parser, main
from .errors import QuantizationError, QuantizationFailed

_LAZY = ('quantize', 'QUANT_OUTPUTS', 'SUPPORTED_CODEBASES')


def __getattr__(name):
    # the pipeline imports onnxruntime.quantization: only when it is used (rep_mm.quantization's
    # subpackages stay cheap to import)
    if name in _LAZY:
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

__all__ = ['quantize', 'main', 'build_parser', 'QuantizationError', 'QuantizationFailed',
           'QUANT_OUTPUTS', 'SUPPORTED_CODEBASES', 'EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT']
