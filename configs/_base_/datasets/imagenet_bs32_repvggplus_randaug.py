# ImageNet-1k, 32 images per GPU, as the official RepVGGplus-L2pse run: train at 256 with
# RandomResizedCrop + flip + RandAugment ("raug15"), test at 320 (resize the short edge to 320,
# center-crop 320, bilinear; the official TEST.CROP=False path).
#
# Official "raug15" (DingXiaoH/RepVGG train/randaug.py, RandAugPolicy(magnitude=15)): 2 ops per
# image drawn uniformly from 16 timm-style ops (incl. Invert, SolarizeAdd, Cutout), each always
# applied with an integer magnitude drawn uniformly from [0, 15) on a 10-level scale, fill 128.
# Approximation here: mmpretrain's RandAugment with the 'timm_increasing' op set, 2 ops,
# magnitude ~ Uniform(0, 15) on the same 10-level scale ('inf' std). Not reproduced exactly:
# the op set (no Invert / Cutout / PosterizeTpu direction), the integer magnitudes, the fill
# value (BGR mean instead of 128) and the random bilinear/bicubic choice of the geometric ops.
_base_ = ['./imagenet_bs32_pil_resize.py']

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=256, backend='pillow', interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=15, magnitude_std='inf',
         hparams=dict(pad_val=[104, 116, 124], interpolation='bilinear')),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=320, edge='short', backend='pillow', interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=320),
    dict(type='PackInputs'),
]

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
