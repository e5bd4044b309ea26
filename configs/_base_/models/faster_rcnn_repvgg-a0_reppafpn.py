# Faster R-CNN with a RepVGG-A0 backbone and rep_mm's RepPAFPN neck (a PAFPN of RepVGG blocks,
# as YOLOv6's Rep-PAN): four levels at strides 4-32 plus one stride-2 RepVGG block for stride 64.
# Converting the model (rep_mm.reparameterize, the hook, or model.switch_to_deploy() as
# mmdeploy calls it) folds the blocks of backbone AND neck.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(
    type='rep_mm.RepFasterRCNN',  # FasterRCNN + model-level switch_to_deploy (mmdeploy)
    backbone=dict(
        _delete_=True,
        type='rep_mm.RepVGG',
        arch='A0',  # stage widths 48, 96, 192, 1280
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_eval=True,
        norm_cfg=dict(type='BN', requires_grad=True),
        # PLACEHOLDER path: a TRAINING-form RepVGG-A0 ImageNet checkpoint whose keys are
        # 'backbone.' + the official names (see retinanet_repvgg-a0_fpn.py).
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-A0_backbone-train.pth',
                      prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='rep_mm.RepPAFPN',
        in_channels=[48, 96, 192, 1280],
        out_channels=256,
        num_outs=5,
        num_repeats=1))
