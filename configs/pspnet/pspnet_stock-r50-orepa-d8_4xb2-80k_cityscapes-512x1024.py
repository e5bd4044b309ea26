# mmseg's OWN ResNetV1c-50 (d8) trained with OREPA blocks (rep_mm.ReparamWrapped: every kxk
# conv-BN pair, including the three 3x3 convs of the deep stem and the dilated 3x3 convs), in
# the stock PSPNet, Cityscapes 512x1024, 80k. Fold after training:
#   rep-mm fold-stock THIS_CONFIG work_dirs/.../iter_80000.pth psp-stock.pth
# psp-stock.pth loads with strict=True into mmseg's pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py.
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,  # the ResNet-V1c ImageNet weights do not fit the swapped layers
    backbone=dict(
        _delete_=True,
        type='rep_mm.ReparamWrapped',
        conv_type='orepa',
        backbone=dict(
            type='mmseg.ResNetV1c',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            dilations=(1, 1, 2, 4),
            strides=(1, 2, 1, 1),
            norm_cfg=norm_cfg,
            norm_eval=False,
            style='pytorch',
            contract_dilation=True,
            # PLACEHOLDER path of a TRAINING-form checkpoint of this wrapped backbone
            init_cfg=dict(type='Pretrained',
                          checkpoint='checkpoints/stock-r50v1c-orepa_backbone-train.pth',
                          prefix='backbone.'))))

# the deep stem is three plain 3x3 OREPA blocks (no OREPALargeConv): name it for the stem lr
optim_wrapper = dict(
    constructor='rep_mm.OREPAOptimWrapperConstructor',
    paramwise_cfg=dict(stem_lr_mult=0.1, stem_keys=['backbone.stem.']))

custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
