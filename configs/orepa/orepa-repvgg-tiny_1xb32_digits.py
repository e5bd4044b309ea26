# A small OREPA-RepVGG (rep_mm.OREPARepVGG, custom arch: OREPA dense branch + 1x1 + identity BN)
# on scikit-learn's handwritten digits at 32x32, trainable on a CPU in seconds. Prepare the data
# first with `python -m rep_mm.datasets.digits data/digits` (or --cfg-options data_root=DIR).
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='rep_mm.OREPARepVGG',
        # stages of 32/64/128/256 channels (the stem has 32)
        arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
        # 32x32 input: stride-1 stem, then 32 -> 16 -> 8 -> 4 -> 2
        strides=(1, 2, 2, 2, 2),
        out_indices=(3, ),
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
)

# evaluate the converted (deploy-form) model during validation and convert before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
