# A small ResNet (rep_mm.ReparamResNet, conv_type='dbb') on scikit-learn's handwritten digits at
# 32x32, trainable on a CPU in seconds. Prepare the data first with
# `python -m rep_mm.datasets.digits data/digits` (or pass --cfg-options data_root=DIR).
_base_ = './_base_/reparam-resnet-tiny_1xb32_digits.py'

model = dict(backbone=dict(conv_type='dbb'))
