# PSPNet with an OREPA ResNet-50 backbone (rep_mm.ReparamResNet, conv_type='orepa') at output
# stride 8 (stages 3 and 4 dilated by 2 and 4), Cityscapes 512x1024, mmseg's 80k schedule.
# The deep linear stem gets its own learning rate (rep_mm.OREPAOptimWrapperConstructor).
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='rep_mm.RepEncoderDecoder',  # EncoderDecoder + model-level switch_to_deploy (mmdeploy)
    pretrained=None,  # else EncoderDecoder pushes the ResNet-V1c checkpoint into the backbone
    backbone=dict(
        _delete_=True,
        type='rep_mm.ReparamResNet',
        arch='resnet50',
        conv_type='orepa',
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,  # the stem trains, at its own lr (below)
        norm_cfg=norm_cfg,
        # PLACEHOLDER path: a TRAINING-form OREPA ResNet-50 ImageNet checkpoint with keys
        # 'backbone.' + the official names.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/orepa-resnet50_backbone-train.pth',
                      prefix='backbone.')))

optim_wrapper = dict(
    constructor='rep_mm.OREPAOptimWrapperConstructor',
    paramwise_cfg=dict(stem_lr_mult=0.1))

custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
