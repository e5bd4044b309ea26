# RepOpt-VGG-B1 (target form: a plain conv3x3 + BN + ReLU VGG) on ImageNet-1k, trained by
# RepOptSGD from searched scales (the released RepOpt-VGG-B1-scales.pth, or one extracted from
# repoptvgg-b1-hs_8xb32_cifar100.py with tools/extract_scales.py). The official setting:
# 120 epochs, 8 x 32 images, lr 0.1, 5 warmup epochs, weight decay 4e-5 (not on BN / biases),
# label smoothing 0.1. The trained model deploys unchanged (fold BN only).
_base_ = [
    '../_base_/datasets/imagenet_bs32_pil_resize.py',
    '../_base_/schedules/imagenet_bs256_120e_coslr_warmup_repvgg.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepOptVGG', arch='B1', mode='target', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
              topk=(1, 5)),
)

optim_wrapper = dict(
    _delete_=True,
    constructor='rep_mm.RepOptOptimWrapperConstructor',
    scales='RepOpt-VGG-B1-scales.pth',
    optimizer=dict(type='rep_mm.RepOptSGD', lr=0.1, momentum=0.9, nesterov=True,
                   weight_decay=4e-5),
)

# the rule of initialisation from the scales (from scratch only), then BN folding at test time
custom_hooks = [dict(type='rep_mm.RepOptInitHook'), dict(type='rep_mm.ReparameterizeHook')]
