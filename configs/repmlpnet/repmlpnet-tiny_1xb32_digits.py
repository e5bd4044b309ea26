# A small RepMLPNet (rep_mm.RepMLPNet, custom arch) on scikit-learn's handwritten digits at
# 32x32, trainable on a CPU in seconds. Prepare the data first with
# `python -m rep_mm.datasets.digits data/digits` (or pass --cfg-options data_root=DIR).
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
        type='rep_mm.RepMLPNet',
        # stages of 16/32/64/128 channels; 32x32 input: patch-4 stem -> maps 8, 4, 2, 1, tiled
        # by partitions of 4, 4, 2, 1 (RepMLPNet.stage_sizes(32, 32))
        arch=dict(channels=(16, 32, 64, 128), hs=(4, 4, 2, 1), ws=(4, 4, 2, 1),
                  num_blocks=(1, 1, 2, 1), sharesets_nums=(1, 2, 4, 8), reparam_conv_k=(1, 3)),
        patch_size=4,
        out_indices=(3, ),
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
)

# evaluate the converted (locality-injected) model during validation and convert before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
