# UperNet with a RepVGG-A0 backbone: the four stages at strides 4, 8, 16, 32 feed the FPN of
# the UPerHead (no dilation needed: the head fuses all levels at stride 4).
_base_ = 'mmseg::_base_/models/upernet_r50.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='rep_mm.RepEncoderDecoder',  # EncoderDecoder + model-level switch_to_deploy (mmdeploy)
    pretrained=None,  # else EncoderDecoder pushes the ResNet checkpoint into the backbone
    backbone=dict(
        _delete_=True,
        type='rep_mm.RepVGG',
        arch='A0',  # stage widths 48, 96, 192, 1280
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        # PLACEHOLDER path: a TRAINING-form RepVGG-A0 ImageNet checkpoint whose keys are
        # 'backbone.' + the official names (stage0.rbr_dense.conv.weight, ...), e.g. the official
        # RepVGG-A0-train.pth re-saved with a 'backbone.' prefix, or an mmpretrain RepVGG
        # classifier checkpoint with its keys mapped by rep_mm.io.load_weights.
        # PretrainedInit loads with strict=False: check the log for unmatched keys.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvgg-A0_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=[48, 96, 192, 1280]),
    auxiliary_head=dict(in_channels=192, in_index=2))
