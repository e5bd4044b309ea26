# RepOpt-VGG-L1 (target form: a plain conv3x3 + BN + ReLU VGG, blocks 1/8/14/24/1, widths as B1)
# on ImageNet-1k, trained by RepOptSGD from the released RepOpt-VGG-L1-scales.pth (a copy is in
# tests/data/reference/repopt_scales/; point elsewhere with
# --cfg-options optim_wrapper.scales=PATH).
# Recipe: the official README (DingXiaoH/RepOptimizers) trains B2, L1 and L2 with the B1 command,
# only the arch and the scales file changed (8 GPUs x 32, 120 epochs, lr 0.1 for batch 256 with
# linear scaling, 5 warmup epochs, weight decay 4e-5, label smoothing 0.1, no mixup, no EMA), so
# everything but the arch and the scales comes from the B1 config. Official: 79.82% top-1.
# Not checked: whether the paper used other settings (e.g. more epochs / mixup) for L1.
# Augmentation: the B1 config's RandomResizedCrop + flip (test: short edge 256, crop 224); the
# official command also sets AUG.PRESET raug15 (RandAugment, magnitude 15; test: resize 224,
# crop 224), which the B1 config does not reproduce.
_base_ = ['./repoptvgg-b1-target_8xb32_in1k.py']

model = dict(backbone=dict(arch='L1'), head=dict(in_channels=2048))  # int(512 * 4)

optim_wrapper = dict(scales='RepOpt-VGG-L1-scales.pth')
