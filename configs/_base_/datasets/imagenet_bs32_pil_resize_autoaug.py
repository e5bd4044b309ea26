# ImageNet-1k, 32 images per GPU, with AutoAugment (ImageNet policy): the stronger augmentation
# the RepVGG paper used for its 200-epoch models (B2g4, B3g4, B3; also D2se).
_base_ = ['./imagenet_bs32_pil_resize.py']

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # pad with the BGR mean (images are still BGR here)
    dict(type='AutoAugment', policies='imagenet', hparams=dict(pad_val=[104, 116, 124])),
    dict(type='PackInputs'),
]

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
