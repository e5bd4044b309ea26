"""RepMLPNet backbone: official names, every arch injects exactly, any tileable input size."""
import pytest
import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.backbones import RepMLPNet
from rep_mm.testing import randomize_bn_statistics

from ..conftest import load_golden, load_manifest

SMALL = dict(channels=(8, 16, 16, 32), hs=(4, 4, 2, 1), ws=(4, 2, 2, 1), num_blocks=(1, 1, 2, 1),
             sharesets_nums=(1, 2, 4, 8))


def shapes(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


@pytest.mark.parametrize('arch', ['T224', 'B224'])
def test_official_manifests_match_key_for_key(arch):
    for form in ('train', 'deploy'):
        manifest = [(k, s) for k, s in load_manifest(f'RepMLPNet-{arch}__{form}')
                    if not k.startswith('head.')]
        assert shapes(RepMLPNet(arch, deploy=form == 'deploy')) == manifest


@pytest.mark.parametrize('arch', sorted(RepMLPNet.arch_settings))
def test_every_arch_injects_exactly(arch):
    model = randomize_bn_statistics(RepMLPNet(arch, out_indices=(0, 1, 2, 3)), 5)
    size = model.input_size_multiple()
    report = reparameterize(model, verify=torch.randn(1, 3, *size))
    assert report.max_rel_error <= 1e-5, report.summary()
    assert len(report.converted) == sum(model.arch['num_blocks'])
    deploy_keys = [k for k, _ in shapes(RepMLPNet(arch, deploy=True))]
    assert [k for k, _ in shapes(model)] == deploy_keys


def test_golden_model_of_the_original_code():
    golden = load_golden('repmlpnet_small')
    kwargs = golden['builder']['kwargs']
    arch = {key: kwargs[key] for key in ('channels', 'hs', 'ws', 'num_blocks', 'sharesets_nums',
                                         'reparam_conv_k')}
    backbone = RepMLPNet(arch, patch_size=kwargs['patch_size'],
                         globalperceptron_reduce=kwargs['globalperceptron_reduce'])
    head = nn.Linear(kwargs['channels'][-1], kwargs['num_class'])
    state = golden['train_state_dict']
    backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith('head.')},
                             strict=True)
    head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith('head.')})
    backbone.eval()
    with torch.no_grad():
        def classify(x):
            return head(backbone(x)[-1].mean((2, 3)))
        torch.testing.assert_close(classify(golden['input']), golden['train_output'],
                                   rtol=1e-5, atol=1e-5)
        backbone.locality_injection()
        deploy_keys = [k for k in golden['deploy_state_dict'] if not k.startswith('head.')]
        assert list(backbone.state_dict()) == deploy_keys
        torch.testing.assert_close(classify(golden['input']), golden['deploy_output'],
                                   rtol=1e-5, atol=1e-5)


def test_dense_prediction_shapes_on_non_square_inputs():
    model = randomize_bn_statistics(RepMLPNet(SMALL, out_indices=(0, 1, 2, 3)), 1)
    assert model.input_size_multiple() == (32, 32)
    x = torch.randn(2, 3, 64, 96)
    outs = model.eval()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, 16, 4, 6),
                                              (2, 32, 2, 3)]
    report = reparameterize(model, verify=x)
    assert report.max_rel_error <= 1e-5


def test_untileable_input_names_the_sizes_that_work():
    model = RepMLPNet('T224')
    with pytest.raises(ValueError, match=r'cannot tile a 256x256 input.*multiples of 224'):
        model(torch.randn(1, 3, 256, 256))


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='T999'), KeyError, 'unknown RepMLPNet arch'),
    (dict(arch=dict(SMALL, hs=(4, 4, 2))), ValueError, 'one value per stage'),
    (dict(arch={k: v for k, v in SMALL.items() if k != 'ws'}), KeyError, 'ws'),
    (dict(arch=SMALL, out_indices=(5,)), ValueError, 'out of range'),
])
def test_bad_arguments_are_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        RepMLPNet(**kwargs)


def test_frozen_stages_freeze_stem_stage_and_embedding():
    model = RepMLPNet(SMALL, frozen_stages=1).train()
    frozen = [model.conv_embedding, model.stages[0], model.embeds[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert not model.stages[0].training and model.stages[1].training
