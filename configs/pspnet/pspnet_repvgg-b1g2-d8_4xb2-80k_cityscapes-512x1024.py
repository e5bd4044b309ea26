# PSPNet with a RepVGG-B1g2 backbone (output stride 8): the A0 config of the same data set and schedule with a
# wider backbone (as mmseg's R-101 configs inherit the R-50 ones).
_base_ = './pspnet_repvgg-a0-d8_4xb2-80k_cityscapes-512x1024.py'
model = dict(
    backbone=dict(
        arch='B1g2',  # stage widths 128, 256, 512, 2048
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(checkpoint='checkpoints/repvgg-B1g2_backbone-train.pth')),
    decode_head=dict(in_channels=2048),
    auxiliary_head=dict(in_channels=512))
