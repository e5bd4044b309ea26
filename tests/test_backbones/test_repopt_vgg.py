"""RepOpt-VGG: official names (manifests), golden outputs, CSLA / hs folding, mm behaviours."""
import pytest
import torch

from rep_mm import reparameterize
from rep_mm.backbones import RepOptVGG
from rep_mm.blocks import RepOptVGGBlock
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import load_golden, load_manifest, relative_error

TINY = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.125, 0.125, 0.0625, 0.0625))


def randomize_scales(model, seed=0):
    """Scales ~ U(0.2, 1.2) (the golden scheme) for every hs / csla scale, parameter or buffer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if '.scale_' in name:
                tensor.copy_(torch.rand(tensor.shape, generator=gen, dtype=torch.float64) + 0.2)
    return model


@pytest.mark.parametrize('mode', ['target', 'hs'])
def test_b1_matches_official_manifest_key_for_key(mode):
    manifest = load_manifest(f'RepOpt-VGG-B1-{mode}__train')
    num_classes = dict(manifest)['linear.bias'][0]
    with torch.device('meta'):
        model = RepOptVGG('B1', mode=mode, num_classes=num_classes)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == manifest


def test_golden_target_and_hs_outputs():
    golden = load_golden('repopt_vgg_trajectory')
    kwargs = golden['builder']['target']['kwargs']
    arch = dict(num_blocks=kwargs['num_blocks'], width_factor=kwargs['width_multiplier'])
    target = RepOptVGG(arch, mode='target', num_classes=10).eval()
    target.load_state_dict(golden['train_state_dict'], strict=True)
    hs = RepOptVGG(arch, mode='hs', num_classes=10).eval()
    hs.load_state_dict(golden['hs_state_dict'], strict=True)
    with torch.no_grad():
        assert relative_error(golden['train_output'], target(golden['input'])) <= 1e-6
        assert relative_error(golden['hs_output'], hs(golden['input'])) <= 1e-6


@pytest.mark.parametrize('mode', ['target', 'hs', 'csla'])
@pytest.mark.parametrize('dtype,tolerance', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_every_form_folds_exactly(mode, dtype, tolerance):
    model = RepOptVGG(TINY, mode=mode, out_indices=(0, 1, 2, 3)).to(dtype)
    randomize_scales(randomize_bn_statistics(model))
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    report = reparameterize(model, verify=x)
    assert report.max_rel_error <= tolerance
    assert len(report.converted) == 7
    for block in model.modules():
        if isinstance(block, RepOptVGGBlock):
            assert [n for n, _ in block.named_children()] == ['relu', 'rbr_reparam']


def test_csla_scales_are_constant_except_identity():
    model = RepOptVGG(TINY, mode='csla')
    trainable = {n for n, _ in model.named_parameters() if '.scale_' in n}
    constant = {n for n, _ in model.named_buffers() if '.scale_' in n}
    assert trainable == {'stage2.1.scale_identity.weight', 'stage3.1.scale_identity.weight'}
    assert 'stage2.1.scale_conv.weight' in constant and 'stage0.scale_1x1.weight' in constant
    # the same state_dict names as the hs form, so one scales file fits both
    assert model.state_dict().keys() == RepOptVGG(TINY, mode='hs').state_dict().keys()


def test_load_scales_by_name_and_errors():
    hs = randomize_scales(RepOptVGG(TINY, mode='hs'))
    scales = {k: v for k, v in reversed(list(hs.state_dict().items())) if '.scale_' in k}
    csla = RepOptVGG(TINY, mode='csla')
    csla.load_scales(scales)
    for key, value in scales.items():
        assert torch.equal(csla.state_dict()[key], value)
    with pytest.raises(ValueError, match='missing key.*stage0.scale_conv.weight'):
        csla.load_scales({k: v for k, v in scales.items() if k != 'stage0.scale_conv.weight'})
    with pytest.raises(ValueError, match='hs or csla model'):
        RepOptVGG(TINY, mode='target').load_scales(scales)


def test_out_indices_shapes_and_bad_arguments():
    model = RepOptVGG(TINY, out_indices=(0, 1, 2, 3), strides=(1, 2, 2, 2, 2))
    outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4),
                                              (1, 32, 2, 2)]
    assert model.out_channels == (8, 16, 16, 32)
    with pytest.raises(ValueError, match="mode must be one of"):
        RepOptVGG(TINY, mode='train')
    with pytest.raises(KeyError, match='unknown RepOptVGG arch'):
        RepOptVGG('B9')


def test_deploy_built_directly_loads_converted_weights():
    model = randomize_scales(randomize_bn_statistics(RepOptVGG(TINY, mode='hs', num_classes=10)))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    reparameterize(model)
    deployed = RepOptVGG(TINY, mode='hs', num_classes=10, deploy=True).eval()
    deployed.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert relative_error(reference, deployed(x)) <= 1e-5
