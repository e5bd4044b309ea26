# Faster R-CNN, RepVGG-A0 + RepPAFPN (RepVGG-block neck), COCO, 12 epochs (mmdet's 1x schedule,
# not tuned for RepVGG).
_base_ = [
    '../_base_/models/faster_rcnn_repvgg-a0_reppafpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
