# Hyper-Search of RepOpt-VGG-B1 on CIFAR-100 (the official search setting: 240 epochs, total
# batch 256, SGD lr 0.1 with 5 warmup epochs and cosine decay, weight decay 4e-5 except on 1-D
# parameters, label smoothing 0.1, RandAugment). mmpretrain's CIFAR100 reads the python version
# of the dataset from data/cifar100 (download=False here: fetch it yourself, or set
# train_dataloader.dataset.download=True). Then:
#   python tools/extract_scales.py work_dirs/repoptvgg-b1-hs_8xb32_cifar100/epoch_240.pth \
#       RepOpt-VGG-B1-scales.pth --config configs/repopt/repoptvgg-b1-target_8xb32_in1k.py
# The scale names and shapes depend only on the arch (channels), not on the strides or the
# input size, so the scales searched at 32x32 drive the ImageNet-size target model.
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
_base_ = ['../_base_/default_runtime.py']

model = dict(
    type='ImageClassifier',
    # 32x32 input: stride-1 stem and first stage, then 32 -> 16 -> 8 -> 4
    backbone=dict(type='rep_mm.RepOptVGG', arch='B1', mode='hs', strides=(1, 1, 2, 2, 2),
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=100, in_channels=2048,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
              topk=(1, 5)),
)

dataset_type = 'CIFAR100'
data_root = 'data/cifar100'
data_preprocessor = dict(num_classes=100, mean=[129.304, 124.070, 112.434],
                         std=[68.170, 65.392, 70.418], to_rgb=False)
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5, hparams=dict(pad_val=[104, 116, 124])),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=32, num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', download=False,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128, num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, split='test', download=False,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=4e-5, nesterov=True),
    # the official rule: no weight decay on 1-D parameters (BN, the searched scales) or biases
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

max_epochs = 240
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 5, by_epoch=True, begin=5,
         end=max_epochs, eta_min=0.0, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
auto_scale_lr = dict(base_batch_size=256)
