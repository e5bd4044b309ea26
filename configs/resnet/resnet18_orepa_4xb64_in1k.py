# resnet18, OREPA blocks (kxk, 1x1, 7x7 stem); ImageNet-1k, OREPA's 120-epoch recipe.
_base_ = './_base_/reparam-resnet_4xb64_in1k.py'

model = dict(backbone=dict(arch='resnet18', conv_type='orepa'), head=dict(in_channels=512))
