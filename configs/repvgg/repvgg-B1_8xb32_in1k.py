# RepVGG-B1 on ImageNet-1k (8 GPUs x 32 images).
# Recipe: the paper's 120 epochs (RandomResizedCrop + flip, SGD, cosine).
# Deploy form: 51.82M parameters (official count, incl. the 1000-class linear layer).
_base_ = [
    '../_base_/models/repvgg-A0_in1k.py',
    '../_base_/datasets/imagenet_bs32_pil_resize.py',
    '../_base_/schedules/imagenet_bs256_120e_coslr_warmup_repvgg.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='B1'), head=dict(in_channels=2048))

# validation evaluates a converted (deploy-form) copy; testing converts the model
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
