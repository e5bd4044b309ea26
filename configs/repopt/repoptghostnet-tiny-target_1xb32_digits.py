# RepOpt-GhostNet (step 2 of RepOptimizer) on the digits: the tiny arch of
# repoptghostnet-tiny-hs_1xb32_digits.py in mode='target' (ghost modules whose cheap depthwise
# conv + BN has no parallel branch), trained by RepOptSGD with the grad mults of the scales
# extracted from the Hyper-Search checkpoint (tools/extract_scales.py; point
# `optim_wrapper.scales` elsewhere with --cfg-options optim_wrapper.scales=PATH). RepOptInitHook
# applies the rule of initialisation in before_train (from scratch only); testing folds the BNs.
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

tiny_arch = dict(width=1.0, cfgs=(((3, 16, 16, 0, 1), ), ((3, 48, 24, 0, 2), ),
                                  ((5, 72, 40, 0.25, 2), ), ((3, 120, 80, 0, 2), )))

model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepOptGhostNet', arch=tiny_arch, mode='target',
                  out_indices=(-1, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=240,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )),
)

# same lr / momentum / decay as the search; no decay on BN / biases (the constructor's rule);
# clip_grad is refused (it breaks the equivalence with the CSLA model)
optim_wrapper = dict(
    _delete_=True,
    constructor='rep_mm.RepOptOptimWrapperConstructor',
    scales='work_dirs/repoptghostnet-tiny-hs_1xb32_digits/scales.pth',
    optimizer=dict(type='rep_mm.RepOptSGD', lr=0.05, momentum=0.9, weight_decay=1e-4,
                   nesterov=True),
)

custom_hooks = [dict(type='rep_mm.RepOptInitHook'), dict(type='rep_mm.ReparameterizeHook')]
