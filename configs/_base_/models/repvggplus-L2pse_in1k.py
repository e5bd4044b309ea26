# RepVGGplus-L2pse classifier for ImageNet-1k. The body (rep_mm.RepVGGplus) returns the
# features of stage1, stage2, stage3_first and stage4; rep_mm.RepVGGplusClsHead owns the official
# `linear` and the auxiliary classifiers `stage1_aux`, `stage2_aux`, `stage3_first_aux`
# (training only, loss weight 0.1 each, removed by the conversion). Official recipe: label
# smoothing 0.1 with mixup alpha 0.2 (timm Mixup, prob 1, no cutmix).
# rep_mm.RepImageClassifier adds a model-level switch_to_deploy() (what mmdeploy calls), so an
# export also drops the auxiliary classifiers.
model = dict(
    type='rep_mm.RepImageClassifier',
    backbone=dict(type='rep_mm.RepVGGplus', arch='L2pse', out_indices=(0, 1, 2, 4)),
    neck=None,
    head=dict(
        type='rep_mm.RepVGGplusClsHead',
        num_classes=1000,
        # stage1, stage2, stage3_first, stage4 of L2pse: 64 * 2.5, 128 * 2.5, 256 * 2.5, 512 * 5
        in_channels=(160, 320, 640, 2560),
        aux_loss_weight=0.1,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
                  num_classes=1000, loss_weight=1.0),
        topk=(1, 5),
    ),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)),
)
