# mmdet's OWN ResNet-50 trained with OREPA blocks (rep_mm.ReparamWrapped swaps every kxk conv-BN
# pair; the 7x7 stem becomes OREPA's deep linear stem), in the stock Faster R-CNN + FPN, COCO 1x.
# After training, fold into the stock layers:
#   rep-mm fold-stock THIS_CONFIG work_dirs/.../epoch_12.pth r50-stock.pth
# r50-stock.pth then loads with strict=True into mmdet's faster-rcnn_r50_fpn_1x_coco.py, with no
# rep_mm installed. The model type stays mmdet's FasterRCNN (stock keys outside the backbone).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='rep_mm.ReparamWrapped',
        conv_type='orepa',
        backbone=dict(
            type='mmdet.ResNet',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=-1,  # the stem trains, at its own lr (below)
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True,
            style='pytorch',
            # torchvision's ResNet-50 weights do not fit the swapped layers; PLACEHOLDER path
            # of a TRAINING-form checkpoint of this wrapped ResNet-50 (e.g. an ImageNet run of
            # mmpretrain's ResNet-50 wrapped the same way; keys 'backbone.' + module paths).
            init_cfg=dict(type='Pretrained',
                          checkpoint='checkpoints/stock-r50-orepa_backbone-train.pth',
                          prefix='backbone.'))))

optim_wrapper = dict(
    constructor='rep_mm.OREPAOptimWrapperConstructor',
    paramwise_cfg=dict(stem_lr_mult=0.1))

custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
