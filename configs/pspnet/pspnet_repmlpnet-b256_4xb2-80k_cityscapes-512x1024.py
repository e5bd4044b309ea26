# PSPNet with a RepMLPNet-B256 backbone: the T256 config of the same data set and schedule with a
# wider backbone (as mmseg's R-101 configs inherit the R-50 ones).
_base_ = './pspnet_repmlpnet-t256_4xb2-80k_cityscapes-512x1024.py'
model = dict(
    backbone=dict(
        arch='B256',  # stage widths 96, 192, 384, 768
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(checkpoint='checkpoints/repmlpnet-B256_backbone-train.pth')),
    decode_head=dict(in_channels=768),
    auxiliary_head=dict(in_channels=384))
