# RepVGG-D2se on ImageNet-1k (8 GPUs x 32 images).
# Recipe: the paper's 200 epochs with AutoAugment, label smoothing 0.1 and mixup 0.2.
# D2se (official weights "RepVGG-D2se-200epochs"): trained at 224, evaluated at 320
# (83.55% top-1 at 320, 81.82% at 224 per the official README).
# Parameters: 133.33M in training form (the number the official README gives), 120.39M in
# deploy form, both incl. the 1000-class linear layer (= the official state_dict manifests).
_base_ = [
    '../_base_/models/repvgg-B3_lbs-mixup_in1k.py',
    '../_base_/datasets/imagenet_bs32_pil_resize_autoaug.py',
    '../_base_/schedules/imagenet_bs256_200e_coslr_warmup_repvgg.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='D2se'), head=dict(in_channels=2560))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=320, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=320),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# validation evaluates a converted (deploy-form) copy; testing converts the model
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
