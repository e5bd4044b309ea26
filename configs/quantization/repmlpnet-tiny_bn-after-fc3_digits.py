# The RepMLPNet authors' quantization recipe on the digits RepMLPNet
# (configs/repmlpnet/repmlpnet-tiny_1xb32_digits.py): take the converted (locality-injected)
# model, insert a BN after the fc3 of every RepMLP block (flow A of docs/qat.md: statistics
# measured on training batches by rep_mm.QATHook, affine set so that the model computes exactly
# what the converted one did), fine-tune, fold the BN back. The insert-BN step covers the 5
# fc3 (the blocks' fused operator, a grouped 1x1 conv); the conv-BN layers (patch embedding,
# downsampling embeds, FFN), the global-perceptron convs and the stand-alone BNs (prebn1 /
# prebn2 / head_norm) are not re-param blocks and train as they are.
#
# Default: with fake quantization of every fc3 (int8 per-channel weights, uint8 inputs;
# model.weight_quant=per_tensor to match `rep-mm quantize --per-tensor`). The authors' literal
# recipe, a floating-point fine-tune with the BN after fc3, is one key:
#   --cfg-options model.fake_quant=False
# After training <work_dir>/qat_deploy.pth is a plain deploy-form checkpoint (BN folded into
# fc3) for the stock config; `rep-mm qat-fold` folds any epoch_N.pth of the run the same way.
#   python tools/train.py configs/quantization/repmlpnet-tiny_bn-after-fc3_digits.py \
#       --cfg-options load_from=TRAINING_OR_CONVERTED_CKPT data_root=data/digits
#   rep-mm quantize configs/repmlpnet/repmlpnet-tiny_1xb32_digits.py \
#       work_dirs/repmlpnet-tiny_bn-after-fc3_digits/qat_deploy.pth --work-dir work_dirs/int8
_base_ = ['../repmlpnet/repmlpnet-tiny_1xb32_digits.py']

custom_imports = dict(imports=['rep_mm', 'rep_mm.quantization.qat'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='rep_mm.QATModel',
    flow='after_conversion',
    fake_quant=True,
    # the stock model in deploy form (load_from may still be a training-form checkpoint:
    # QATHook converts it on loading)
    model=dict(
        type='ImageClassifier',
        backbone=dict(
            type='rep_mm.RepMLPNet',
            arch=dict(channels=(16, 32, 64, 128), hs=(4, 4, 2, 1), ws=(4, 4, 2, 1),
                      num_blocks=(1, 1, 2, 1), sharesets_nums=(1, 2, 4, 8),
                      reparam_conv_k=(1, 3)),
            patch_size=4,
            out_indices=(3, ),
            deploy=True,
        ),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=10,
            in_channels=128,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, ),
        ),
    ),
)

# fine-tuning: 2 epochs, 1/10 of the base learning rate, cosine decay, no warm-up
qat_epochs = 2
optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=qat_epochs, by_epoch=True, begin=0, end=qat_epochs,
         eta_min=0.0, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=qat_epochs, val_interval=qat_epochs)

# the model is already converted: no ReparameterizeHook
custom_hooks = [dict(type='rep_mm.QATHook', calib_batches=8)]
