# RetinaNet, RepVGG-A0 + FPN, COCO, 12 epochs (mmdet's 1x schedule, not tuned for RepVGG).
_base_ = [
    '../_base_/models/retinanet_repvgg-a0_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
