# RetinaNet with a small RepVGG + FPN on digit scenes (detected at 128x128, 10 classes): trains
# on a CPU. Data: `python -m rep_mm.datasets.digit_scenes data/digit_scenes`.
_base_ = [
    '../_base_/datasets/digit_scenes_det.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(
    type='rep_mm.RepRetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[17.1, 17.1, 17.1],  # grayscale scenes as 3 channels; training-set statistics
        std=[47.1, 47.1, 47.1],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    backbone=dict(
        type='rep_mm.RepVGG',
        # stem 32, stages 32/64/128/256 channels at strides 4, 8, 16, 32
        arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
        out_indices=(1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True)),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256],
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=10,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=2,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                      ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    # a low score threshold: an undertrained model scores below mmdet's 0.05 and CocoMetric
    # then returns no metrics at all
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.01,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))

max_iters = 2000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=100, end=max_iters),
]
# rep_mm's loops are mmengine's; their data follows --cfg-options data_root=DIR
train_cfg = dict(type='rep_mm.IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='rep_mm.ValLoop')
test_cfg = dict(type='rep_mm.TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
