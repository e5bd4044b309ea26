# Hyper-Search (step 1 of RepOptimizer) on scikit-learn's digits at 32x32: a tiny RepOpt-VGG in
# mode='hs' (3x3 + 1x1 + identity branches with TRAINABLE per-channel scales, then BN), trained
# with plain SGD. Its checkpoint holds the searched scales; extract them for the target model:
#   python tools/train.py configs/repopt/repoptvgg-tiny-hs_1xb32_digits.py
#   python tools/extract_scales.py work_dirs/repoptvgg-tiny-hs_1xb32_digits/epoch_4.pth \
#       work_dirs/repoptvgg-tiny-hs_1xb32_digits/scales.pth \
#       --config configs/repopt/repoptvgg-tiny-target_1xb32_digits.py
#   python tools/train.py configs/repopt/repoptvgg-tiny-target_1xb32_digits.py
# Prepare the data first with `python -m rep_mm.datasets.digits data/digits`.
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

# the shape of configs/repvgg/repvgg-tiny_1xb32_digits.py: stages of 32/64/128/256 channels
tiny_arch = dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5])

model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepOptVGG', arch=tiny_arch, mode='hs',
                  strides=(1, 2, 2, 2, 2), out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=256,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )),
)

# the official search setting: no weight decay on 1-D parameters (BN and the scales) or biases
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                        flat_decay_mult=0.0))
