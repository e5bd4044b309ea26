"""RepGhostNet (structural) and RepOpt-GhostNet: official names, golden output, exact folding."""
import pytest
import torch

from rep_mm import reparameterize
from rep_mm.backbones import RepGhostNet, RepOptGhostNet
from rep_mm.blocks import RepGhostModule, RepOptGhostModule
from rep_mm.blocks.repghost import make_divisible
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import load_golden, load_manifest, relative_error

# one stride-2 SE bottleneck with a 5x5 depthwise conv, one identity-shortcut bottleneck
TINY = dict(width=1.0, cfgs=[[[3, 8, 8, 0, 1]], [[5, 16, 12, 0.25, 2]], [[3, 12, 12, 0, 1]]])


def randomize_scales(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if 'fusion_scale' in name or 'cheap_operation.1.weight' in name:
                if tensor.dim() == 1 and not name.endswith('bias'):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen, dtype=torch.float64)
                                 + 0.2)
    return model


@pytest.mark.parametrize('mode', ['target', 'hs'])
def test_repopt_ghostnet_05x_matches_official_manifest(mode):
    manifest = load_manifest(f'RepOpt-GhostNet-0.5x-{mode}__train')
    num_classes = dict(manifest)['classifier.bias'][0]
    with torch.device('meta'):
        model = RepOptGhostNet('0.5x', mode=mode, num_classes=num_classes)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == manifest


def test_make_divisible_rounds_like_the_official_tables():
    assert [make_divisible(v, 4) for v in (18, 30, 50, 5, 42)] == [20, 32, 52, 8, 44]


def test_golden_repopt_ghost_output():
    golden = load_golden('repopt_ghost')
    kwargs = golden['builder']['target']['kwargs']
    model = RepOptGhostNet(dict(width=kwargs['width'], cfgs=kwargs['cfgs']), mode='target',
                           num_classes=10, dropout=0.0).eval()
    model.load_state_dict(golden['train_state_dict'], strict=True)
    with torch.no_grad():
        assert relative_error(golden['train_output'], model(golden['input'])) <= 1e-6


@pytest.mark.parametrize('dtype,tolerance', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_structural_repghostnet_converts_exactly(dtype, tolerance):
    model = randomize_bn_statistics(RepGhostNet(TINY, out_indices=(0, 1, 2, 3))).to(dtype)
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    report = reparameterize(model, verify=x)
    assert report.max_rel_error <= tolerance
    assert len(report.converted) == 6
    assert not any('fusion_bn' in k for k in model.state_dict())
    assert reparameterize(model).converted == []  # idempotent


def test_structural_deploy_built_directly_loads_converted_weights():
    model = randomize_bn_statistics(RepGhostNet(TINY, num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    reparameterize(model)
    deployed = RepGhostNet(TINY, num_classes=10, deploy=True).eval()
    deployed.load_state_dict(model.state_dict(), strict=True)
    module = deployed.blocks[0][0].ghost1
    assert isinstance(module, RepGhostModule) and module.cheap_operation.bias is not None
    with torch.no_grad():
        assert relative_error(reference, deployed(x)) <= 1e-5


@pytest.mark.parametrize('mode', ['target', 'hs', 'csla'])
@pytest.mark.parametrize('dtype,tolerance', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_repopt_ghostnet_forms_fold_exactly(mode, dtype, tolerance):
    model = RepOptGhostNet(TINY, mode=mode, num_classes=10, dropout=0.0).to(dtype)
    randomize_scales(randomize_bn_statistics(model))
    report = reparameterize(model, verify=torch.randn(2, 3, 32, 32, dtype=dtype))
    assert report.max_rel_error <= tolerance
    assert sum(isinstance(m, RepOptGhostModule) for m in model.modules()) == 6


def test_feature_maps_for_mm_heads():
    model = RepGhostNet('0.5x', out_indices=(2, 4, 7, 9))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 12, 16, 16), (1, 20, 8, 8), (1, 80, 2, 2),
                                              (1, 480, 2, 2)]
    assert model.out_channels[-1] == 480
    with pytest.raises(ValueError, match='out_indices entry 10 is out of range'):
        RepGhostNet('0.5x', out_indices=(10,))
    with pytest.raises(KeyError, match='unknown GhostNet arch'):
        RepGhostNet('0.7x')


def test_frozen_stages_and_norm_eval():
    model = RepOptGhostNet(TINY, frozen_stages=1, norm_eval=True).train()
    assert not model.conv_stem.weight.requires_grad
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert not any(m.training for m in model.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
