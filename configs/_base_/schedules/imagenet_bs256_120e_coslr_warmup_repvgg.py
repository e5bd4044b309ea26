# The RepVGG paper's ImageNet schedule: SGD momentum 0.9, lr 0.1 for a global batch of 256
# (auto_scale_lr rescales it linearly for other batch sizes when enabled), weight decay 1e-4,
# 5 linear warmup epochs, then cosine decay to 0; 120 epochs in total.
#
# Weight decay exactly as the official README / train.py: none on any bias (incl. BN biases)
# and none on the BN weights of the conv branches (`rbr_dense.bn`, `rbr_1x1.bn`, also the
# auxiliary `*.bn` of RepVGGplus), but decay on the identity-branch BN weight
# (`rbr_identity.weight`: "it is better to use it in most of the cases"). The official
# Caffe-style 2x lr on biases ("made no difference") is not used.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(
        bias_decay_mult=0.0,
        custom_keys={'.bn.': dict(decay_mult=0.0)},
    ),
)

warmup_epochs = 5
max_epochs = 120
param_scheduler = [
    # the official warmup starts from lr 0 (WARMUP_LR = 0); LinearLR needs a factor > 0
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
