# UperNet with a small RepMLPNet on digit scenes (64x64, 11 classes): trains on a CPU.
# Data: `python -m rep_mm.datasets.digit_scenes data/digit_scenes` (2,000 train / 200 val scenes).
# The partitions (16, 8, 4, 2) tile the stage maps of a 64x64 input (16, 8, 4, 2 pixels with the
# patch-4 stem): RepMLPNet.input_size_multiple() is (64, 64) for this arch.
_base_ = [
    '../_base_/datasets/digit_scenes_seg.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[17.1, 17.1, 17.1],
    std=[47.1, 47.1, 47.1],
    bgr_to_rgb=False,
    pad_val=0,
    seg_pad_val=255,
    size=(64, 64))
model = dict(
    type='rep_mm.RepEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='rep_mm.RepMLPNet',
        arch=dict(channels=(32, 64, 128, 256), hs=(16, 8, 4, 2), ws=(16, 8, 4, 2),
                  num_blocks=(1, 1, 2, 1), sharesets_nums=(1, 4, 16, 32),
                  reparam_conv_k=(1, 3)),
        patch_size=4,
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead',
        in_channels=[32, 64, 128, 256],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2),
        channels=64,
        dropout_ratio=0.1,
        num_classes=11,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         class_weight=[0.5] + [1.0] * 10)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# schedule: AdamW, 50 warmup iterations, then poly decay
max_iters = 2000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.02, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=50, end=max_iters),
]
# rep_mm's loops are mmengine's; their data follows --cfg-options data_root=DIR
train_cfg = dict(type='rep_mm.IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='rep_mm.ValLoop')
test_cfg = dict(type='rep_mm.TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
