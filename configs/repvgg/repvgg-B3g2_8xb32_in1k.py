# RepVGG-B3g2 on ImageNet-1k (8 GPUs x 32 images).
# Recipe: the paper's 200 epochs with AutoAugment, label smoothing 0.1 and mixup 0.2.
# (B3g2 is not in the paper; it gets the recipe of its B3 / B3g4 siblings.)
# Deploy form: 87.40M parameters incl. the 1000-class linear layer (counted here; B3g2 is
# not in the paper: this is the count that matches the official B3 / B3g4 numbers).
_base_ = [
    '../_base_/models/repvgg-B3_lbs-mixup_in1k.py',
    '../_base_/datasets/imagenet_bs32_pil_resize_autoaug.py',
    '../_base_/schedules/imagenet_bs256_200e_coslr_warmup_repvgg.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='B3g2'), head=dict(in_channels=2560))

# validation evaluates a converted (deploy-form) copy; testing converts the model
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
