# The official RepVGGplus-L2pse schedule (DingXiaoH/RepVGG README "Reproduce RepVGGplus-L2pse"
# and train/optimizer.py): 300 epochs, SGD with Nesterov momentum 0.9, lr 0.1 for a global batch
# of 256 (8 GPUs x 32), weight decay 4e-5, 5 warmup epochs from 0, cosine decay to 0.
#
# Weight decay as the official set_weight_decay(): none on 1-D parameters (every BN weight and
# bias) and on biases, except the identity-branch BN weight `rbr_identity.weight`, which decays.
# No EMA (official EMA_ALPHA = 0), no gradient clipping, no custom L2 (the README calls the
# custom weight decay deprecated and "insignificant" for RepVGGplus; the backbone still exposes
# `custom_l2()` for anyone who wants to add it).
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5),
    paramwise_cfg=dict(
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        norm_decay_mult=0.0,
        custom_keys={'rbr_identity.weight': dict(decay_mult=1.0)},
    ),
)

warmup_epochs = 5
max_epochs = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# base_batch_size = (8 GPUs) x (32 samples per GPU)
auto_scale_lr = dict(base_batch_size=256)
