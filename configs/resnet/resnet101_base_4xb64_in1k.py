# resnet101, plain conv-BN layers (baseline); ImageNet-1k, OREPA's 120-epoch recipe.
_base_ = './_base_/reparam-resnet_4xb64_in1k.py'

model = dict(backbone=dict(arch='resnet101', conv_type='base'), head=dict(in_channels=2048))
