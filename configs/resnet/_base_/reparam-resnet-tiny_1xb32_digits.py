# Shared by configs/resnet/reparam-resnet-tiny_{base,acb,dbb,orepa}_1xb32_digits.py, which set
# only conv_type: a small ResNet (rep_mm.ReparamResNet) on scikit-learn's handwritten digits at
# 32x32, trainable on a CPU in seconds.
_base_ = [
    '../../_base_/datasets/digits_32.py',
    '../../_base_/schedules/digits_sgd_cosine.py',
    '../../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='rep_mm.ReparamResNet',
        conv_type='base',
        # basic blocks, one per stage, stage widths 32/64/128/256
        arch=dict(block='basic', stage_blocks=(1, 1, 1, 1), width=0.5),
        stem_channels=16,
        # 32x32 input: stride-2 stem and max-pool -> 8x8, then 8 -> 4 -> 2 -> 1
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
