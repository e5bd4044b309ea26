# RetinaNet, RepVGG-B1g2 + FPN, COCO, 12 epochs (mmdet's 1x schedule, not tuned for RepVGG).
_base_ = './retinanet_repvgg-a0_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='B1g2',  # stage widths 128, 256, 512, 2048
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-B1g2_backbone-train.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 2048]))
