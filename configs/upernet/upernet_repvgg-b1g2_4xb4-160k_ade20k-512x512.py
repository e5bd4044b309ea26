# UperNet with a RepVGG-B1g2 backbone
# on ADE20K, 512x512 crops, 160k iterations (mmseg schedule, not tuned for this backbone).
_base_ = [
    '../_base_/models/upernet_repvgg-a0.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='B1g2',  # stage widths 128, 256, 512, 2048
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-B1g2_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=[128, 256, 512, 2048], num_classes=150),
    auxiliary_head=dict(in_channels=512, num_classes=150))

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
