"""mmpretrain's and the official RepMLPNet checkpoints load into rep_mm's RepMLPNet."""
import torch
from torch import nn

from rep_mm.backbones import RepMLPNet
from rep_mm.io import detect_kind, load_weights
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import load_manifest, relative_error

# channels divisible by 32 so that mmpretrain's divisible-by-8 global perceptron bottleneck
# equals the official channels // 4
MM_ARCH = dict(channels=[32, 32, 64, 64], depths=[1, 1, 2, 1], sharesets_nums=[1, 2, 4, 8])
OURS = dict(channels=(32, 32, 64, 64), hs=(16, 8, 4, 2), ws=(16, 8, 4, 2),
            num_blocks=(1, 1, 2, 1), sharesets_nums=(1, 2, 4, 8))


def test_mmpretrain_repmlpnet_loads_strictly_and_computes_the_same():
    from mmpretrain.models import RepMLPNet as MMRepMLPNet
    theirs = randomize_bn_statistics(
        MMRepMLPNet(MM_ARCH, img_size=64, reparam_conv_kernels=(1, 3)), 3).eval()
    state = theirs.state_dict()
    assert detect_kind(state) == 'mmpretrain'
    ours = RepMLPNet(OURS).eval()
    report = load_weights(ours, state)
    assert report.ok and report.kind == 'mmpretrain' and len(report.loaded) == len(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(theirs(x)[-1], ours(x)[-1]) <= 1e-5
        theirs.switch_to_deploy()
        deployed = RepMLPNet(OURS, deploy=True).eval()
        load_weights(deployed, theirs.state_dict())
        assert relative_error(theirs(x)[-1], deployed(x)[-1]) <= 1e-5


def test_official_repmlpnet_checkpoint_maps_its_head_into_an_mm_classifier():
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    classifier = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='rep_mm.RepMLPNet', arch='T224'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)))
    manifest = load_manifest('RepMLPNet-T224__train')
    official = {key: torch.full(shape, 0.5) for key, shape in manifest}
    report = load_weights(classifier, official)
    assert report.kind == 'official' and report.ok
    assert torch.all(classifier.head.fc.weight == 0.5)
    assert isinstance(classifier.backbone.head_norm, nn.BatchNorm2d)
