# resnext50-32x4d, DBB blocks for the kxk convs; ImageNet-1k, OREPA's 120-epoch recipe.
_base_ = './_base_/reparam-resnet_4xb64_in1k.py'

model = dict(backbone=dict(arch='resnext50_32x4d', conv_type='dbb'), head=dict(in_channels=2048))
