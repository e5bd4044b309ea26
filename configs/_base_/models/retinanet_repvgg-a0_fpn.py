# RetinaNet with a RepVGG-A0 backbone and mmdet's FPN (stages 2-4 at strides 8, 16, 32 plus two
# extra levels), as mmdet's retinanet_r50_fpn.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(
    type='rep_mm.RepRetinaNet',  # RetinaNet + model-level switch_to_deploy (mmdeploy)
    backbone=dict(
        _delete_=True,
        type='rep_mm.RepVGG',
        arch='A0',  # stage widths 48, 96, 192, 1280
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,  # stem and stage 1, as mmdet freezes ResNet's stem and first stage
        norm_eval=True,
        norm_cfg=dict(type='BN', requires_grad=True),
        # PLACEHOLDER path: a TRAINING-form RepVGG-A0 ImageNet checkpoint whose keys are
        # 'backbone.' + the official names (stage0.rbr_dense.conv.weight, ...), e.g. the official
        # RepVGG-A0-train.pth re-saved with a 'backbone.' prefix, or an mmpretrain RepVGG
        # classifier checkpoint with its keys mapped by rep_mm.io.load_weights.
        # PretrainedInit loads with strict=False: check the log for unmatched keys.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-A0_backbone-train.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=[48, 96, 192, 1280]))
