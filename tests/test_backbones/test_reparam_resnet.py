"""ReparamResNet: every conv type converts exactly; official OREPA / DBB names; mm behaviours."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rep_mm import reparameterize
from rep_mm.backbones import ReparamResNet
from rep_mm.backbones.reparam_resnet import ConvBNLayer
from rep_mm.blocks import OREPA, ACBlock, DiverseBranchBlock, OREPA1x1, OREPALargeConv
from rep_mm.registry import MODELS

from ..conftest import load_manifest, relative_error
from ..helpers import randomize_branches

TINY = dict(block='basic', stage_blocks=(1, 2, 1, 1), width=0.125)
TINY_NEXT = dict(block='bottleneck', stage_blocks=(1, 2, 1, 1), width=0.125, groups=4,
                 width_per_group=16)


def shapes(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def backbone_manifest(name):
    return [(k, s) for k, s in load_manifest(name) if not k.startswith('linear.')]


@pytest.mark.parametrize('conv_type', ['base', 'acb', 'dbb', 'orepa'])
@pytest.mark.parametrize('arch', [TINY, TINY_NEXT], ids=['basic', 'resnext'])
def test_every_conv_type_converts_exactly(conv_type, arch):
    torch.manual_seed(0)
    model = randomize_branches(ReparamResNet(arch, conv_type, stem_channels=8), seed=3)
    report = reparameterize(model, verify=torch.randn(2, 3, 64, 48))
    assert report.max_rel_error <= 1e-5, report.summary()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert model.deploy
    # converted keys = keys of the model built with deploy=True; it loads them strictly
    direct = ReparamResNet(arch, conv_type, stem_channels=8, deploy=True)
    assert shapes(direct) == shapes(model)
    direct.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), direct.eval()(x)):
            assert torch.equal(a, b)


def test_float64_conversion_is_exact_with_dilations():
    model = randomize_branches(ReparamResNet(TINY_NEXT, 'orepa', stem_channels=8, strides=(1, 2, 1, 1),
                                    dilations=(1, 1, 2, 4)), seed=4).double()
    report = reparameterize(model, verify=torch.randn(1, 3, 48, 48, dtype=torch.float64))
    assert report.max_rel_error <= 1e-10


@pytest.mark.parametrize('conv_type, kxk, one, stem', [
    ('orepa', OREPA, OREPA1x1, OREPALargeConv), ('dbb', DiverseBranchBlock, None, None),
    ('acb', ACBlock, None, None)])
def test_conv_type_chooses_the_layers(conv_type, kxk, one, stem):
    model = ReparamResNet(TINY_NEXT, conv_type, stem_channels=8)
    block = model.stage1[0]
    assert isinstance(block.conv2, kxk)
    if one is not None:
        assert isinstance(block.conv1, one) and isinstance(block.shortcut, one)
        assert isinstance(model.stage0.conv1, stem)
    else:
        assert isinstance(block.conv1, ConvBNLayer) and isinstance(block.shortcut, ConvBNLayer)
        assert isinstance(model.stage0.conv1, ConvBNLayer)


@pytest.mark.parametrize('name, arch, conv_type', [('OREPA-ResNet-18', 'resnet18', 'orepa'),
                                                   ('OREPA-ResNet-50', 'resnet50', 'orepa'),
                                                   ('DBB-ResNet-18', 'resnet18', 'dbb')])
def test_official_manifests_match_key_for_key(name, arch, conv_type):
    assert shapes(ReparamResNet(arch, conv_type)) == backbone_manifest(f'{name}__train')
    assert shapes(ReparamResNet(arch, conv_type, deploy=True)) == backbone_manifest(
        f'{name}__deploy')


@pytest.mark.parametrize('arch, channels', [
    ('resnet18', (64, 128, 256, 512)), ('resnet34', (64, 128, 256, 512)),
    ('resnet50', (256, 512, 1024, 2048)), ('resnet101', (256, 512, 1024, 2048)),
    ('wide_resnet18', (128, 256, 512, 1024)), ('resnext50_32x4d', (256, 512, 1024, 2048))])
def test_arch_table_output_shapes(arch, channels):
    model = ReparamResNet(arch, 'base', deploy=True).eval()  # deploy form: cheap to build
    assert model.out_channels == channels
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, c, 16 // 2 ** i, 16 // 2 ** i)
                                             for i, c in enumerate(channels)]


def test_resnext_layers_are_grouped():
    model = ReparamResNet('resnext50_32x4d', 'base', deploy=True)
    conv = model.stage1[0].conv2.conv
    assert conv.groups == 32 and conv.in_channels == conv.out_channels == 128


def test_out_indices_frozen_stages_and_norm_eval():
    model = ReparamResNet(TINY, 'orepa', stem_channels=8, out_indices=(1, -1), frozen_stages=1,
                          norm_eval=True)
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 8, 8), (64, 2, 2)]
    model.train()
    for module in (model.stage0, model.stage1):
        assert not any(p.requires_grad for p in module.parameters())
        assert not any(m.training for m in module.modules())
    assert all(p.requires_grad for p in model.stage2.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert model.stage2.training
    reparameterize(model)
    assert not any(p.requires_grad for p in model.stage1.parameters())
    assert all(p.requires_grad for p in model.stage2.parameters())


def test_built_from_the_registry_with_syncbn():
    model = MODELS.build(dict(type='rep_mm.ReparamResNet', arch=TINY, conv_type='dbb',
                              stem_channels=8, norm_cfg=dict(type='SyncBN')))
    assert isinstance(model, ReparamResNet)
    assert isinstance(model.stage1[0].conv1.dbb_origin.bn, nn.SyncBatchNorm)
    randomize_branches(model, 5)
    report = reparameterize(copy.deepcopy(model), verify=torch.randn(1, 3, 32, 32))
    assert report.max_rel_error <= 1e-5


def test_equivalence_in_train_mode_conversion():
    model = randomize_branches(ReparamResNet(TINY, 'orepa', stem_channels=8), 6)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    model.switch_to_deploy()
    with torch.no_grad():
        actual = model.eval()(x)
    assert max(relative_error(a, b) for a, b in zip(expected, actual)) <= 1e-5


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(conv_type='rep'), ValueError, 'conv_type'),
    (dict(arch='resnet19'), KeyError, 'unknown'),
    (dict(arch=dict(block='basic')), KeyError, 'stage_blocks'),
    (dict(arch=dict(block='dense', stage_blocks=(1, 1, 1, 1))), ValueError, 'block'),
    (dict(strides=(1, 2, 2)), ValueError, '4 entries'),
    (dict(out_indices=(4,)), ValueError, 'out of range'),
    (dict(conv_type='dbb', dilations=(1, 1, 2, 2)), ValueError, 'dilation'),
    (dict(arch=dict(block='basic', stage_blocks=(1, 1, 1, 1), groups=2)), ValueError,
     'bottleneck'),
])
def test_bad_arguments_are_explained(kwargs, error, match):
    kwargs.setdefault('arch', TINY)
    with pytest.raises(error, match=match):
        ReparamResNet(**kwargs)
