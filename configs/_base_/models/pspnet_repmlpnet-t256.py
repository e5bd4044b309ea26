# PSPNet with a RepMLPNet-T256 backbone (output stride 32: an MLP backbone cannot be dilated; the
# pyramid pooling sees the whole stage-4 map). T256 needs inputs in multiples of 256
# (RepMLPNet.input_size_multiple()); whole-image testing pads to that and crops back.
_base_ = 'mmseg::_base_/models/pspnet_r50-d8.py'
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='rep_mm.RepEncoderDecoder',  # EncoderDecoder + model-level switch_to_deploy (mmdeploy)
    data_preprocessor=dict(test_cfg=dict(size_divisor=256)),
    pretrained=None,  # else EncoderDecoder pushes the ResNet checkpoint into the backbone
    backbone=dict(
        _delete_=True,
        type='rep_mm.RepMLPNet',
        arch='T256',  # stage widths 64, 128, 256, 512
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        # PLACEHOLDER path: a TRAINING-form RepMLPNet-T256 ImageNet checkpoint whose keys are
        # 'backbone.' + the official names, e.g. the official release re-saved with a
        # 'backbone.' prefix. PretrainedInit loads with strict=False: check the log.
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/repmlpnet-T256_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=512, in_index=3),
    auxiliary_head=dict(in_channels=256, in_index=2))
