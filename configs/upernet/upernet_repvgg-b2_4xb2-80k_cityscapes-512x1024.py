# UperNet with a RepVGG-B2 backbone
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
        arch='B2',  # stage widths 160, 320, 640, 2560
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-B2_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=[160, 320, 640, 2560]),
    auxiliary_head=dict(in_channels=640))

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
