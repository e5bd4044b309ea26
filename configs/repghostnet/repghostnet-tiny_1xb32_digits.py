# A small RepGhostNet (rep_mm.RepGhostNet, 4 bottlenecks) on scikit-learn's handwritten digits at
# 32x32, trainable on a CPU in seconds. Prepare the data first with
# `python -m rep_mm.datasets.digits data/digits` (or pass --cfg-options data_root=DIR).
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

# rows of [kernel, expansion, channels, se_ratio, stride]; 32x32 input: stride-2 stem -> 16,
# then 16 -> 8 -> 4 -> 2; the last 1x1 ConvBnAct has 2 * 120 = 240 channels
tiny_cfgs = (((3, 16, 16, 0, 1), ), ((3, 48, 24, 0, 2), ), ((5, 72, 40, 0.25, 2), ),
             ((3, 120, 80, 0, 2), ))

model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepGhostNet', arch=dict(width=1.0, cfgs=tiny_cfgs),
                  out_indices=(-1, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=240,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
)

# evaluate the converted (deploy-form) model during validation and convert before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
