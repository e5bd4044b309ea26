"""RepVGG / RepVGGplus backbones: every arch converts exactly; official names; mm behaviours."""
import copy

import pytest
import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.backbones import RepVGG, RepVGGplus
from rep_mm.blocks import RepVGGBlock
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import load_golden, load_manifest

HEAD_PREFIXES = ('linear.', 'stage1_aux.', 'stage2_aux.', 'stage3_first_aux.')


def backbone_manifest(name):
    return [(k, s) for k, s in load_manifest(name) if not k.startswith(HEAD_PREFIXES)]


def shapes(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


@pytest.mark.parametrize('arch', sorted(RepVGG.arch_settings))
def test_every_arch_converts_exactly(arch):
    torch.manual_seed(0)
    model = randomize_bn_statistics(RepVGG(arch, out_indices=(0, 1, 2, 3)), seed=1)
    report = reparameterize(model, verify=torch.randn(1, 3, 32, 32))
    assert report.passed, report.summary()
    assert report.max_rel_error <= 1e-5
    num_blocks = sum(model.arch['num_blocks']) + 1
    assert len(report.converted) == num_blocks
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.deploy


def test_repvggplus_converts_exactly():
    arch = dict(num_blocks=(1, 2, 4, 1), width_factor=(0.25, 0.25, 0.125, 0.125))
    model = randomize_bn_statistics(RepVGGplus(arch, out_indices=(0, 1, 2, 3, 4)), seed=2)
    report = reparameterize(model, verify=torch.randn(2, 3, 64, 48))
    assert report.max_rel_error <= 1e-5 and len(report.converted) == 9


@pytest.mark.parametrize('name, arch', [('RepVGG-A0', 'A0'), ('RepVGG-B1g2', 'B1g2'),
                                        ('RepVGG-D2se', 'D2se')])
def test_official_manifests_match_key_for_key(name, arch):
    assert shapes(RepVGG(arch)) == backbone_manifest(f'{name}__train')
    assert shapes(RepVGG(arch, deploy=True)) == backbone_manifest(f'{name}__deploy')


def test_repvggplus_manifest_matches_key_for_key():
    assert shapes(RepVGGplus('L2pse')) == backbone_manifest('RepVGGplus-L2pse__train')
    assert shapes(RepVGGplus('L2pse', deploy=True)) == backbone_manifest(
        'RepVGGplus-L2pse__deploy')


def test_converted_manifest_equals_deploy_manifest():
    model = RepVGG('B1g2')
    model.switch_to_deploy()
    assert shapes(model) == backbone_manifest('RepVGG-B1g2__deploy')


class OfficialClassifier(nn.Module):
    """The official model's layout: backbone stages, global pooling, ``linear``."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.linear = backbone, nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.linear(self.backbone(x)[-1].mean((2, 3)))

    def load_official(self, state_dict):
        head = {k[len('linear.'):]: v for k, v in state_dict.items() if k.startswith('linear.')}
        body = {k: v for k, v in state_dict.items() if not k.startswith('linear.')}
        self.backbone.load_state_dict(body, strict=True)
        self.linear.load_state_dict(head, strict=True)


@pytest.mark.parametrize('case', ['repvgg_small', 'repvgg_small_se'])
def test_golden_models_of_the_original_code(case):
    golden = load_golden(case)
    kwargs = golden['builder']['kwargs']
    arch = dict(num_blocks=kwargs['num_blocks'], width_factor=kwargs['width_multiplier'],
                group_layer_map=kwargs.get('override_groups_map'),
                se_position='pre' if kwargs.get('use_se') else None)
    backbone = RepVGG(arch)
    model = OfficialClassifier(backbone, backbone.out_channels[-1], kwargs['num_classes'])
    model.load_official(golden['train_state_dict'])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(golden['input']), golden['train_output'],
                                   rtol=1e-5, atol=1e-5)
        report = reparameterize(model)
        assert len(report.converted) == sum(kwargs['num_blocks']) + 1
        converted = {f'backbone.{k}' for k in golden['deploy_state_dict']
                     if not k.startswith('linear.')}
        assert converted == {k for k in model.state_dict() if k.startswith('backbone.')}
        torch.testing.assert_close(model(golden['input']), golden['deploy_output'],
                                   rtol=1e-5, atol=1e-5)
    # a model built with deploy=True loads the official converted weights
    direct = OfficialClassifier(RepVGG(arch, deploy=True), backbone.out_channels[-1],
                                kwargs['num_classes'])
    direct.load_official(golden['deploy_state_dict'])
    with torch.no_grad():
        torch.testing.assert_close(direct.eval()(golden['input']), golden['deploy_output'],
                                   rtol=1e-5, atol=1e-5)


def test_out_indices_channels_and_strides():
    arch = dict(num_blocks=(1, 1, 2, 1), width_factor=(0.25, 0.25, 0.25, 0.25))
    model = RepVGG(arch, out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 24), (2, 32, 8, 12),
                                              (2, 64, 4, 6), (2, 128, 2, 3)]
    assert model.out_channels == (16, 32, 64, 128)
    assert len(RepVGG(arch, out_indices=-1).eval()(torch.randn(1, 3, 32, 32))) == 1


def test_dilated_variant_keeps_resolution_and_converts():
    arch = dict(num_blocks=(1, 1, 2, 1), width_factor=(0.25, 0.25, 0.25, 0.25))
    model = RepVGG(arch, strides=(2, 2, 2, 1, 1), dilations=(1, 1, 1, 2, 4),
                   out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]  # output stride 8
    randomize_bn_statistics(model, 3)
    report = reparameterize(model, verify=torch.randn(1, 3, 64, 56))
    assert report.max_rel_error <= 1e-5


def test_frozen_stages_and_norm_eval():
    arch = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25))
    model = RepVGG(arch, frozen_stages=2, norm_eval=True)
    returned = model.train()
    assert returned is model
    for name in ('stage0', 'stage1', 'stage2'):
        stage = getattr(model, name)
        assert not stage.training
        assert all(not p.requires_grad for p in stage.parameters())
    assert all(p.requires_grad for p in model.stage3.parameters())
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model.switch_to_deploy()
    assert all(not p.requires_grad for p in model.stage1.parameters())
    assert all(p.requires_grad for p in model.stage4.parameters())


def test_with_cp_matches_plain_training_step():
    arch = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25))
    torch.manual_seed(0)
    plain = RepVGG(arch)
    checkpointed = copy.deepcopy(plain)
    for m in checkpointed.modules():
        if isinstance(m, RepVGGBlock):
            m.with_cp = True
    x = torch.randn(2, 3, 32, 32)
    plain(x)[-1].sum().backward()
    checkpointed(x)[-1].sum().backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_float64_whole_model_conversion():
    arch = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.25, 0.25, 0.25, 0.25),
                group_layer_map={2: 2, 4: 4}, se_position='pre', se_ratio=4)
    model = randomize_bn_statistics(RepVGG(arch).double(), 4)
    report = reparameterize(model, verify=torch.randn(2, 3, 40, 24, dtype=torch.float64))
    assert report.tolerance == 1e-10 and report.max_rel_error <= 1e-10


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='Z9'), KeyError, 'unknown RepVGG arch'),
    (dict(arch=dict(num_blocks=(1, 1, 1, 1))), KeyError, 'width_factor'),
    (dict(arch=dict(num_blocks=(1, 1, 1), width_factor=(1, 1, 1))), ValueError, '4 entries'),
    (dict(arch='A0', out_indices=(4,)), ValueError, 'out of range'),
    (dict(arch='A0', strides=(2, 2)), ValueError, 'stem'),
    (dict(arch=3), TypeError, 'str or a dict'),
])
def test_bad_arch_arguments_are_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        RepVGG(**kwargs)


def test_custom_l2_sums_over_blocks():
    arch = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25))
    model = RepVGG(arch)
    total = model.custom_l2()
    assert torch.allclose(total, sum(m.custom_l2() for m in model.modules()
                                     if isinstance(m, RepVGGBlock)))
