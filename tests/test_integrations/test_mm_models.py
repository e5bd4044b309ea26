"""Whole segmentors and detectors with re-param parts convert exactly (and at model level)."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import MODELS, init_default_scope

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from rep_mm import reparameterize
from rep_mm.verify.bn_statistics import randomize_bn_statistics

TINY_REPVGG = dict(type='rep_mm.RepVGG',
                   arch=dict(num_blocks=(1, 1, 2, 1), width_factor=(0.25, 0.25, 0.25, 0.25)),
                   out_indices=(0, 1, 2, 3))
TINY_REPMLP = dict(type='rep_mm.RepMLPNet',
                   arch=dict(channels=(8, 16, 16, 32), hs=(4, 4, 2, 1), ws=(4, 4, 2, 1),
                             num_blocks=(1, 1, 1, 1), sharesets_nums=(1, 2, 4, 8)),
                   out_indices=(0, 1, 2, 3))
SEG_PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1])


def psp_segmentor(backbone):
    return dict(type='rep_mm.RepEncoderDecoder', data_preprocessor=SEG_PREPROCESSOR,
                backbone=backbone,
                decode_head=dict(type='PSPHead', in_channels=128, in_index=3, channels=16,
                                 pool_scales=(1, 2), num_classes=5, align_corners=False))


def uper_segmentor(backbone, in_channels):
    return dict(type='rep_mm.RepEncoderDecoder', data_preprocessor=SEG_PREPROCESSOR,
                backbone=backbone,
                decode_head=dict(type='UPerHead', in_channels=in_channels, in_index=[0, 1, 2, 3],
                                 channels=16, pool_scales=(1, 2), num_classes=5))


def build(cfg, scope):
    init_default_scope(scope)
    return randomize_bn_statistics(MODELS.build(cfg), seed=7).eval()


def tensor_forward(x):
    return lambda model: model(x, mode='tensor')


@pytest.mark.parametrize('cfg', [psp_segmentor(TINY_REPVGG),
                                 uper_segmentor(TINY_REPVGG, [16, 32, 64, 128]),
                                 uper_segmentor(TINY_REPMLP, [8, 16, 16, 32])],
                         ids=['pspnet-repvgg', 'upernet-repvgg', 'upernet-repmlpnet'])
def test_segmentors_convert_exactly(cfg):
    model = build(cfg, 'mmseg')
    x = torch.randn(2, 3, 64, 96)
    report = reparameterize(model, verify=tensor_forward(x))
    assert report.max_rel_error <= 1e-5, report.summary()
    assert report.converted and all(n.startswith('backbone.') for n in report.converted)
    assert model.backbone.deploy


def test_retinanet_with_rep_neck_converts_backbone_and_neck_at_model_level():
    cfg = dict(
        type='rep_mm.RepRetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(TINY_REPVGG, out_indices=(1, 2, 3)),
        neck=dict(type='rep_mm.RepPAFPN', in_channels=[32, 64, 128], out_channels=16,
                  num_outs=5),
        bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=16, stacked_convs=1,
                       feat_channels=16,
                       anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                             scales_per_octave=1, ratios=[1.0],
                                             strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                       loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                       loss_bbox=dict(type='L1Loss')))
    model = build(cfg, 'mmdet')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x, mode='tensor')
    model.switch_to_deploy()  # what mmdeploy calls
    with torch.no_grad():
        actual = model(x, mode='tensor')
    errors = rep_mm.reparam.max_errors(expected, actual)
    assert errors[1] <= 1e-5
    assert model.backbone.deploy and model.neck.deploy
    assert not [n for n, m in model.named_modules() if hasattr(m, 'rbr_dense')]


def test_faster_rcnn_with_repvgg_backbone_converts_exactly():
    cfg = dict(
        type='rep_mm.RepFasterRCNN',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=TINY_REPVGG,
        neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=16, num_outs=5),
        rpn_head=dict(type='RPNHead', in_channels=16, feat_channels=16,
                      anchor_generator=dict(type='AnchorGenerator', scales=[8],
                                            ratios=[1.0], strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                      loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
                      loss_bbox=dict(type='L1Loss')),
        roi_head=dict(type='StandardRoIHead',
                      bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                              roi_layer=dict(type='RoIAlign', output_size=7,
                                                             sampling_ratio=0),
                                              out_channels=16, featmap_strides=[4, 8, 16, 32]),
                      bbox_head=dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                                     roi_feat_size=7, num_classes=3,
                                     bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                                     loss_cls=dict(type='CrossEntropyLoss'),
                                     loss_bbox=dict(type='L1Loss'))),
        train_cfg=None,
        test_cfg=ConfigDict(rpn=dict(nms_pre=100, max_per_img=20, nms=dict(type='nms', iou_threshold=0.7),
                               min_bbox_size=0),
                      rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                                max_per_img=10)))
    model = build(cfg, 'mmdet')
    x = torch.randn(1, 3, 64, 64)
    # the backbone + neck features decide everything downstream: compare them exactly
    report = reparameterize(model, verify=lambda m: m.extract_feat(x))
    assert report.max_rel_error <= 1e-5 and model.backbone.deploy
