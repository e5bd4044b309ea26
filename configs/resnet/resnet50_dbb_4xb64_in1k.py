# resnet50, DBB blocks for the kxk convs; ImageNet-1k, OREPA's 120-epoch recipe.
_base_ = './_base_/reparam-resnet_4xb64_in1k.py'

model = dict(backbone=dict(arch='resnet50', conv_type='dbb'), head=dict(in_channels=2048))
