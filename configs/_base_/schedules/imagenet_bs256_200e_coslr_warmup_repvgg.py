# The 200-epoch variant of the RepVGG schedule (the paper's models trained with AutoAugment,
# label smoothing and mixup: B2g4, B3g4, B3; also D2se): same optimizer, 200 epochs.
_base_ = ['./imagenet_bs256_120e_coslr_warmup_repvgg.py']

max_epochs = 200
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 5, eta_min=0.0, by_epoch=True, begin=5,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
