# PSPNet with a RepMLPNet-B256 backbone
# on Cityscapes, 512x1024 crops, 80k iterations (mmseg schedule, not tuned for this backbone).
_base_ = [
    '../_base_/models/pspnet_repmlpnet-t256.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='B256',  # stage widths 96, 192, 384, 768
        # PLACEHOLDER path (see the base model file for the key format)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repmlpnet-B256_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=768),
    auxiliary_head=dict(in_channels=384))

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
