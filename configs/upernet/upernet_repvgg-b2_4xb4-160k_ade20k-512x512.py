# UperNet with a RepVGG-B2 backbone: the A0 config of the same data set and schedule with a
# wider backbone (as mmseg's R-101 configs inherit the R-50 ones).
_base_ = './upernet_repvgg-a0_4xb4-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='B2',  # stage widths 160, 320, 640, 2560
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(checkpoint='checkpoints/repvgg-B2_backbone-train.pth')),
    decode_head=dict(in_channels=[160, 320, 640, 2560]),
    auxiliary_head=dict(in_channels=640))
