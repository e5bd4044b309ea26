# Faster R-CNN with a small RepVGG and the RepPAFPN neck (RepVGG blocks) on digit scenes
# (detected at 128x128, 10 classes): trains on a CPU; conversion folds backbone and neck.
# Data: `python -m rep_mm.datasets.digit_scenes data/digit_scenes`.
_base_ = [
    '../_base_/models/faster_rcnn_repvgg-a0_reppafpn.py',
    '../_base_/datasets/digit_scenes_det.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    data_preprocessor=dict(
        mean=[17.1, 17.1, 17.1],  # grayscale scenes as 3 channels; training-set statistics
        std=[47.1, 47.1, 47.1],
        bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='rep_mm.RepVGG',
        # stem 32, stages 32/64/128/256 channels at strides 4, 8, 16, 32; from scratch
        arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True)),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=10)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=200),
        rcnn=dict(sampler=dict(num=128))),
    # a low score threshold: an undertrained model scores below mmdet's 0.05 and CocoMetric
    # then returns no metrics at all
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(score_thr=0.01, max_per_img=20)))

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
