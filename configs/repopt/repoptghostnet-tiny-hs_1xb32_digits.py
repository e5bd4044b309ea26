# Hyper-Search (step 1 of RepOptimizer) for a tiny RepOpt-GhostNet on scikit-learn's digits at
# 32x32: the ghost modules in mode='hs' (cheap depthwise conv and identity with TRAINABLE
# per-channel scales, then BN), trained with plain SGD. Extract the searched scales for the target:
#   python tools/train.py configs/repopt/repoptghostnet-tiny-hs_1xb32_digits.py
#   python tools/extract_scales.py work_dirs/repoptghostnet-tiny-hs_1xb32_digits/epoch_4.pth \
#       work_dirs/repoptghostnet-tiny-hs_1xb32_digits/scales.pth \
#       --config configs/repopt/repoptghostnet-tiny-target_1xb32_digits.py
#   python tools/train.py configs/repopt/repoptghostnet-tiny-target_1xb32_digits.py
# Prepare the data first with `python -m rep_mm.datasets.digits data/digits`.
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

# the bottlenecks of configs/repghostnet/repghostnet-tiny_1xb32_digits.py: rows of
# [kernel, expansion, channels, se_ratio, stride]; 32x32 -> stem 16 -> 16, 8, 4, 2
tiny_arch = dict(width=1.0, cfgs=(((3, 16, 16, 0, 1), ), ((3, 48, 24, 0, 2), ),
                                  ((5, 72, 40, 0.25, 2), ), ((3, 120, 80, 0, 2), )))

model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepOptGhostNet', arch=tiny_arch, mode='hs', out_indices=(-1, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=240,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )),
)

# the official search setting: no weight decay on 1-D parameters (BN and the scales) or biases
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                        flat_decay_mult=0.0))
