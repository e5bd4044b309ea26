# PSPNet with a RepVGG-A0 backbone at output stride 8 (d8): stride-1 stages 3 and 4 dilated by
# 2 and 4, as mmseg's ResNet-d8 models. Dilated RepVGG blocks fold exactly (the 1x1 and identity
# branches sit at the centre tap of the dilated 3x3 kernel).
_base_ = 'mmseg::_base_/models/pspnet_r50-d8.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='rep_mm.RepEncoderDecoder',  # EncoderDecoder + model-level switch_to_deploy (mmdeploy)
    pretrained=None,  # else EncoderDecoder pushes the ResNet checkpoint into the backbone
    backbone=dict(
        _delete_=True,
        type='rep_mm.RepVGG',
        arch='A0',  # stage widths 48, 96, 192, 1280
        strides=(2, 2, 2, 1, 1),
        dilations=(1, 1, 1, 2, 4),
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        # PLACEHOLDER path: a TRAINING-form RepVGG-A0 ImageNet checkpoint whose keys are
        # 'backbone.' + the official names (stage0.rbr_dense.conv.weight, ...), e.g. the official
        # RepVGG-A0-train.pth re-saved with a 'backbone.' prefix, or an mmpretrain RepVGG
        # classifier checkpoint with its keys mapped by rep_mm.io.load_weights.
        # PretrainedInit loads with strict=False: check the log for unmatched keys.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-A0_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=1280, in_index=3),
    auxiliary_head=dict(in_channels=192, in_index=2))
