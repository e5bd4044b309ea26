"""OREPARepVGG: official key layout (A0 manifest), exact conversion, arch table, mm behaviours."""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from rep_mm import reparameterize
from rep_mm.backbones import OREPARepVGG
from rep_mm.registry import MODELS

from ..conftest import load_manifest
from ..helpers import randomize_branches

TINY = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.125, 0.125, 0.25, 0.25))


def shapes(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


@pytest.mark.parametrize('mode', ['train', 'deploy'])
def test_a0_matches_the_official_manifest_key_for_key(mode):
    official = [(k, s) for k, s in load_manifest(f'OREPA-RepVGG-A0__{mode}')
                if not k.startswith('linear.')]
    with torch.device('meta'):
        model = OREPARepVGG('A0', deploy=mode == 'deploy')
    assert shapes(model) == official
    assert model.out_channels == (48, 96, 192, 1280)


@pytest.mark.parametrize('arch,widths', [('A1', (64, 128, 256, 1280)),
                                         ('A2', (96, 192, 384, 1408))])
def test_arch_table_widths_and_block_counts(arch, widths):
    with torch.device('meta'):
        model = OREPARepVGG(arch, out_indices=(0, 1, 2, 3))
    assert model.out_channels == widths
    assert [len(getattr(model, f'stage{i}')) for i in range(1, 5)] == [2, 4, 14, 1]
    assert model.stage0.rbr_dense.vector.shape == (5, 64)  # stem: 3 -> 64, no identity row


def test_tiny_model_converts_exactly_and_loads_into_deploy_form():
    torch.manual_seed(0)
    model = randomize_branches(OREPARepVGG(TINY, out_indices=(0, 1, 2, 3)), seed=4)
    x = torch.randn(2, 3, 48, 40)
    report = reparameterize(model, verify=x)
    assert len(report.converted) == 7
    assert report.max_rel_error <= 1e-5, report.summary()
    assert model.deploy and not any(isinstance(m, _BatchNorm) for m in model.modules())
    direct = OREPARepVGG(TINY, out_indices=(0, 1, 2, 3), deploy=True)
    assert shapes(direct) == shapes(model)
    direct.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), direct.eval()(x)):
            assert torch.equal(a, b)


def test_float64_conversion_is_exact_to_1e_10():
    model = randomize_branches(OREPARepVGG(TINY), seed=2).double()
    report = reparameterize(model, verify=torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert report.max_rel_error <= 1e-10, report.summary()


def test_registered_outputs_strides_and_frozen_stages():
    model = MODELS.build(dict(type='OREPARepVGG', arch=TINY, out_indices=(1, 3),
                              frozen_stages=1, norm_eval=True))
    model.train()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 8), (1, 128, 2, 2)]
    for module in (model.stage0, model.stage1):
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in model.stage2.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    converted = copy.deepcopy(model)
    reparameterize(converted)
    assert not any(p.requires_grad for p in converted.stage1.parameters())


def test_bad_arguments_are_reported():
    with pytest.raises(KeyError, match="unknown OREPARepVGG arch 'B1'"):
        OREPARepVGG('B1')
    with pytest.raises(ValueError, match='out_indices entry 4 is out of range'):
        OREPARepVGG(TINY, out_indices=(4,))
    with pytest.raises(ValueError, match='strides and dilations need 5 entries'):
        OREPARepVGG(TINY, strides=(2, 2))
