# UperNet with a RepVGG-B1g2 backbone
# on Cityscapes, 512x1024 crops, 80k iterations (mmseg schedule, not tuned for this backbone).
_base_ = [
    '../_base_/models/upernet_repvgg-a0.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='B1g2',  # stage widths 128, 256, 512, 2048
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-B1g2_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=[128, 256, 512, 2048]),
    auxiliary_head=dict(in_channels=512))

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
