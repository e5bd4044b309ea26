# A small RepVGGplus (rep_mm.RepVGGplus, custom arch with SE after the activation) and its
# auxiliary classifiers (rep_mm.RepVGGplusClsHead, training only: removed by the conversion) on
# scikit-learn's handwritten digits at 32x32, trainable on a CPU in seconds. Prepare the data
# first with `python -m rep_mm.datasets.digits data/digits` (or --cfg-options data_root=DIR).
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    # model-level switch_to_deploy() (what mmdeploy calls): also drops the auxiliary heads
    type='rep_mm.RepImageClassifier',
    backbone=dict(
        type='rep_mm.RepVGGplus',
        # stages of 32/64/128(+128)/256 channels (the stem has 32); stage 3 splits 1 + 1
        arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5],
                  se_position='post', se_ratio=4),
        # 32x32 input: stride-1 stem, then 32 -> 16 -> 8 -> 4 -> 2
        strides=(1, 2, 2, 2, 2),
        # stage1, stage2, stage3_first (auxiliary classifiers) and stage4 (main)
        out_indices=(0, 1, 2, 4),
    ),
    neck=None,
    head=dict(
        type='rep_mm.RepVGGplusClsHead',
        num_classes=10,
        in_channels=(32, 64, 128, 256),
        aux_loss_weight=0.1,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
)

# evaluate the converted (deploy-form) model during validation and convert before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
