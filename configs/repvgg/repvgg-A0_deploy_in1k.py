# RepVGG-A0 in deploy form (one 3x3 conv per block): evaluate / export converted checkpoints,
# e.g. the output of `rep-mm convert` or of the official convert.py (keys `stage*.rbr_reparam.*`).
# Other archs: override `model.backbone.arch` and `model.head.in_channels` (or copy this file).
_base_ = ['./repvgg-A0_8xb32_in1k.py']

model = dict(backbone=dict(deploy=True))

# already converted: nothing left to re-parameterize
custom_hooks = []
