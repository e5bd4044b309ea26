# wide-resnet18-2x, ACB blocks for the kxk convs; ImageNet-1k, OREPA's 120-epoch recipe.
_base_ = './_base_/reparam-resnet_4xb64_in1k.py'

model = dict(backbone=dict(arch='wide_resnet18', conv_type='acb'), head=dict(in_channels=1024))
