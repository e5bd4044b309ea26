# UperNet with a RepMLPNet-T256 backbone. rep_mm's RepMLPNet takes any input whose stage maps the
# partitions tile: T256 (patch 4, partitions 64/32/16/8) needs multiples of 256
# (RepMLPNet.input_size_multiple()), so 512x512 and 512x1024 crops work; whole-image testing pads
# to a multiple of 256 (data_preprocessor.test_cfg) and crops the prediction back.
_base_ = 'mmseg::_base_/models/upernet_r50.py'
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
        # 'backbone.' + the official names (conv_embedding.conv.weight, stages.0.0.repmlp_block.
        # fc3.weight, ...), e.g. the official release re-saved with a 'backbone.' prefix.
        # PretrainedInit loads with strict=False: check the log for unmatched keys.
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/repmlpnet-T256_backbone-train.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256, in_index=2))
