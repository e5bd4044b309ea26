# QAT after conversion (flow A of docs/qat.md) of PSPNet-RepVGG on digit scenes
# (configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py): the converted model
# gets a BN after each fused backbone conv (statistics measured by rep_mm.QATHook on training
# batches, affine set so that nothing changes), then fine-tunes with int8 weights / uint8
# activations fake-quantized in the 7 fused convs (the PSP head trains in floating point);
# <work_dir>/qat_deploy.pth is then a plain deploy-form checkpoint of the stock config.
#   python tools/train.py \
#       configs/quantization/pspnet_repvgg-tiny-d4_qat-after-conversion_digit-scenes-64x64.py \
#       --cfg-options load_from=TRAINING_OR_CONVERTED_CKPT data_root=data/digit_scenes
# Per-tensor int8 weights (to match `rep-mm quantize --per-tensor`):
#   --cfg-options model.weight_quant=per_tensor
_base_ = ['../pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py']

custom_imports = dict(imports=['rep_mm', 'rep_mm.quantization.qat'], allow_failed_imports=False)

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    _delete_=True,
    type='rep_mm.QATModel',
    flow='after_conversion',
    fake_quant=True,
    weight_quant='per_channel',
    # the stock segmentor in deploy form (load_from may be a training-form checkpoint:
    # QATHook converts it on loading); its data_preprocessor is the config's top-level one
    model=dict(
        type='rep_mm.RepEncoderDecoder',
        pretrained=None,
        backbone=dict(
            type='rep_mm.RepVGG',
            arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
            strides=(2, 1, 2, 2, 1),
            dilations=(1, 1, 1, 1, 2),
            out_indices=(0, 1, 2, 3),
            norm_cfg=norm_cfg,
            deploy=True),
        decode_head=dict(
            type='PSPHead',
            in_channels=[64, 128, 256],
            in_index=[1, 2, 3],
            input_transform='resize_concat',
            channels=64,
            pool_scales=(1, 2, 3, 6),
            dropout_ratio=0.1,
            num_classes=11,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                             class_weight=[0.5] + [1.0] * 10)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole')),
)

# fine-tuning: 200 iterations at 1/10 of the base learning rate, poly decay, no warm-up
qat_iters = 200
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=qat_iters),
]
train_cfg = dict(max_iters=qat_iters, val_interval=qat_iters)
default_hooks = dict(checkpoint=dict(interval=qat_iters))

# the model is already converted: no ReparameterizeHook
custom_hooks = [dict(type='rep_mm.QATHook', calib_batches=8)]
