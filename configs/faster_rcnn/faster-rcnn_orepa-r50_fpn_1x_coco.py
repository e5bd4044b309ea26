# Faster R-CNN + FPN with an OREPA ResNet-50 backbone (rep_mm.ReparamResNet, conv_type='orepa':
# OREPA kxk and 1x1 blocks, the deep linear 7x7 stem), COCO, mmdet's 1x schedule.
# The OREPA authors advise a separate learning rate for the deep linear stem when fine-tuning
# downstream: rep_mm.OREPAOptimWrapperConstructor puts the stem (its OREPALargeConv) in its own
# param groups at stem_lr_mult x lr. The stem is therefore trained (frozen_stages=-1).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(
    type='rep_mm.RepFasterRCNN',  # FasterRCNN + model-level switch_to_deploy (mmdeploy)
    backbone=dict(
        _delete_=True,
        type='rep_mm.ReparamResNet',
        arch='resnet50',
        conv_type='orepa',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        norm_cfg=dict(type='BN', requires_grad=True),
        # PLACEHOLDER path: a TRAINING-form OREPA ResNet-50 ImageNet checkpoint with keys
        # 'backbone.' + the official names (e.g. the official release re-saved with that prefix).
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/orepa-resnet50_backbone-train.pth',
                      prefix='backbone.')))

optim_wrapper = dict(
    constructor='rep_mm.OREPAOptimWrapperConstructor',
    paramwise_cfg=dict(stem_lr_mult=0.1))

# validate a converted copy during training; convert in place before testing
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
