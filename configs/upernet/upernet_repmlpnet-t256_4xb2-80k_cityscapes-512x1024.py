# UperNet with a RepMLPNet-T256 backbone
# on Cityscapes, 512x1024 crops, 80k iterations (mmseg schedule, not tuned for this backbone).
_base_ = [
    '../_base_/models/upernet_repmlpnet-t256.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor)

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
