# RepVGG-B3 on ImageNet-1k (8 GPUs x 32 images).
# Recipe: the paper's 200 epochs with AutoAugment, label smoothing 0.1 and mixup 0.2.
# Deploy form: 110.96M parameters (official count, incl. the 1000-class linear layer).
_base_ = [
    '../_base_/models/repvgg-B3_lbs-mixup_in1k.py',
    '../_base_/datasets/imagenet_bs32_pil_resize_autoaug.py',
    '../_base_/schedules/imagenet_bs256_200e_coslr_warmup_repvgg.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='B3'), head=dict(in_channels=2560))

# validation evaluates a converted (deploy-form) copy; testing converts the model
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
