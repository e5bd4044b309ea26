"""Quantization-aware training of re-parameterized models (issue 13), two flows:

* **A, after conversion** (:mod:`.insert_bn`): BN inserted after each fused conv of the converted
  model, statistics measured on training data, affine set so that the model is unchanged;
  fine-tuned with int8 weight (per channel, or per tensor) / uint8 activation fake quantization and QAT BN
  folding; folded back into a plain deploy-form checkpoint. Also floating-point fine-tuning
  of a deploy-form model (``fake_quant=False``).
* **B, equivalent kernel** (:mod:`.eqk`): the training-form model is trained with each block's
  output computed from the fake-quantized ``equivalent_kernel_bias()``, so the int8 kernel of
  the converted model is the one trained.

mmengine: ``type='rep_mm.QATModel'`` and ``rep_mm.QATHook`` (:mod:`.model`); fake quantization
(:mod:`.fake_quant`) matches onnxruntime's static QDQ scheme. See docs/qat.md.
"""
from .eqk import (QAT_BLOCK_TYPES, EqKQATMixin, eqk_blocks, prepare_eqk_qat,  # noqa: F401
                  strip_eqk_qat)
from .errors import QATError
from .fake_quant import (WEIGHT_GRANULARITIES, ActivationQuantizer, fake_quant_weight,
                         quantize_weight_int8, weight_scale)
from .insert_bn import (BNConv2d, calibrate_inserted_bn, fold_bn, fused_convs, insert_bn,
                        inserted_bn_modules, prepare_insert_bn)
from .model import (DEPLOY_CHECKPOINT, FLOWS, QATHook, QATModel, deploy_state_dict,
                    fold_checkpoint, save_deploy_checkpoint, with_deploy)
from .utils import fake_quant_disabled, output_errors

__all__ = ['QATError', 'ActivationQuantizer', 'fake_quant_weight', 'quantize_weight_int8',
           'weight_scale', 'BNConv2d', 'calibrate_inserted_bn', 'fold_bn', 'fused_convs',
           'insert_bn', 'inserted_bn_modules', 'prepare_insert_bn', 'QAT_BLOCK_TYPES',
           'EqKQATMixin', 'eqk_blocks', 'prepare_eqk_qat', 'strip_eqk_qat', 'QATHook',
           'QATModel', 'deploy_state_dict', 'fold_checkpoint', 'with_deploy', 'FLOWS',
           'DEPLOY_CHECKPOINT', 'fake_quant_disabled', 'output_errors',
           'save_deploy_checkpoint', 'WEIGHT_GRANULARITIES']
