# RepVGG-B2g2 on ImageNet-1k (8 GPUs x 32 images).
# Recipe: the paper's 120 epochs (RandomResizedCrop + flip, SGD, cosine).
# Deploy form: 63.96M parameters incl. the 1000-class linear layer (counted here; B2g2 is
# not in the paper: this is the count that matches the official B2 / B2g4 numbers).
_base_ = [
    '../_base_/models/repvgg-A0_in1k.py',
    '../_base_/datasets/imagenet_bs32_pil_resize.py',
    '../_base_/schedules/imagenet_bs256_120e_coslr_warmup_repvgg.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='B2g2'), head=dict(in_channels=2560))

# validation evaluates a converted (deploy-form) copy; testing converts the model
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
