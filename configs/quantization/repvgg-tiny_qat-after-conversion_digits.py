# QAT after conversion (flow A of docs/qat.md) of the digits RepVGG
# (configs/repvgg/repvgg-tiny_1xb32_digits.py): the converted model gets a BN after each fused
# conv (statistics measured on training batches by rep_mm.QATHook, affine set so that nothing
# changes), then fine-tunes with per-channel int8 weights / uint8 activations fake-quantized;
# after training <work_dir>/qat_deploy.pth is a plain deploy-form checkpoint (BN folded back).
#   python tools/train.py configs/quantization/repvgg-tiny_qat-after-conversion_digits.py \
#       --cfg-options load_from=TRAINING_OR_CONVERTED_CKPT data_root=data/digits
_base_ = ['../repvgg/repvgg-tiny_1xb32_digits.py']

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
            type='rep_mm.RepVGG',
            arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
            strides=(1, 2, 2, 2, 2),
            out_indices=(3, ),
            deploy=True,
        ),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=10,
            in_channels=256,
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
