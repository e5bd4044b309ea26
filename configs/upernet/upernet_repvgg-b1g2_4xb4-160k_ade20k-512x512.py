# UperNet with a RepVGG-B1g2 backbone: the A0 config of the same data set and schedule with a
# wider backbone (as mmseg's R-101 configs inherit the R-50 ones).
_base_ = './upernet_repvgg-a0_4xb4-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='B1g2',  # stage widths 128, 256, 512, 2048
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(checkpoint='checkpoints/repvgg-B1g2_backbone-train.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 2048]),
    auxiliary_head=dict(in_channels=512))
