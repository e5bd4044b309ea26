# SGD with momentum and a per-iteration cosine decay; no weight decay on BN and biases.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)

max_epochs = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, by_epoch=True, begin=1,
         end=max_epochs, eta_min=0.0, convert_to_iter_based=True),
]

# rep_mm's loops are mmengine's; their data follows --cfg-options data_root=DIR
train_cfg = dict(type='rep_mm.EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='rep_mm.ValLoop')
test_cfg = dict(type='rep_mm.TestLoop')

auto_scale_lr = dict(base_batch_size=32)
