# UperNet with a RepMLPNet-B256 backbone: the T256 config of the same data set and schedule with a
# wider backbone (as mmseg's R-101 configs inherit the R-50 ones).
_base_ = './upernet_repmlpnet-t256_4xb4-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='B256',  # stage widths 96, 192, 384, 768
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(checkpoint='checkpoints/repmlpnet-B256_backbone-train.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
