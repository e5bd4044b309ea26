# RepOpt-VGG (step 2 of RepOptimizer) on the digits: the tiny arch of
# repoptvgg-tiny-hs_1xb32_digits.py in mode='target' (a plain conv3x3 + BN + ReLU VGG), trained by
# RepOptSGD with the grad mults of the scales extracted from the Hyper-Search checkpoint
# (tools/extract_scales.py; point `optim_wrapper.scales` elsewhere with
# --cfg-options optim_wrapper.scales=PATH). RepOptInitHook applies the rule of initialisation
# in before_train (from scratch only; never on resume or load_from).
_base_ = [
    '../_base_/datasets/digits_32.py',
    '../_base_/schedules/digits_sgd_cosine.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

tiny_arch = dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5])

model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepOptVGG', arch=tiny_arch, mode='target',
                  strides=(1, 2, 2, 2, 2), out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=256,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )),
)

# same lr / momentum / decay as the search; no decay on BN / biases (the constructor's rule);
# clip_grad is refused (it breaks the equivalence with the CSLA model)
optim_wrapper = dict(
    _delete_=True,
    constructor='rep_mm.RepOptOptimWrapperConstructor',
    scales='work_dirs/repoptvgg-tiny-hs_1xb32_digits/scales.pth',
    optimizer=dict(type='rep_mm.RepOptSGD', lr=0.05, momentum=0.9, weight_decay=1e-4,
                   nesterov=True),
)

custom_hooks = [dict(type='rep_mm.RepOptInitHook')]
