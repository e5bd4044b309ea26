# RepVGG-B3 classifier with the paper's stronger recipe: label smoothing 0.1 and mixup
# (alpha 0.2) on top of AutoAugment (see the *_autoaug dataset config).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepVGG', arch='B3', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2560,  # int(512 * 5)
        # mode 'original': (1 - eps) * one_hot + eps / num_classes, as timm / PyTorch
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
                  num_classes=1000, loss_weight=1.0),
        topk=(1, 5),
    ),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)),
)
