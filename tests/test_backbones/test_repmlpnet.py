"""RepMLPNet backbone: official names, every arch injects exactly, exactly the input sizes the
network tiles (odd sizes round down as in the original), arch values checked at construction."""
import pytest
import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.backbones import RepMLPNet
from rep_mm.verify.bn_statistics import randomize_bn_statistics

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
    with pytest.raises(ValueError, match=r'cannot tile a 256x256 input: stage 0 gets a 64x64 map'
                       r'.*56x56 partitions.*Heights that work: \[224, 225, 226, 227, 448\]'
                       r'.*multiples of 224'):
        model(torch.randn(1, 3, 256, 256))


# 3 stages whose embeddings meet odd maps: 40 -> stem /4 = 10 -> 5 -> 2 (floor), tiled by 5, 5, 2
ODD = dict(channels=(8, 16, 16), hs=(5, 5, 2), ws=(5, 5, 2), num_blocks=(1, 1, 1),
           sharesets_nums=(1, 2, 4))


def real_stage_sizes(model, height, width):
    """Stage map sizes by running the real stem and embedding convs (None: a conv fails)."""
    x = torch.zeros(1, 3, height, width)
    sizes = []
    with torch.no_grad():
        try:
            x = model.conv_embedding(x)
            sizes.append(tuple(x.shape[-2:]))
            for embed in model.embeds:
                x = embed(x)
                sizes.append(tuple(x.shape[-2:]))
        except RuntimeError:  # the input of a conv is smaller than its kernel
            return None
    return sizes


def test_odd_sizes_that_round_down_run_and_inject_exactly():
    model = randomize_bn_statistics(RepMLPNet(ODD, out_indices=(0, 1, 2)), 3).eval()
    assert model.input_size_multiple() == (160, 160)  # the old rule accepted only these
    assert model.stage_sizes(40, 41) == [(10, 10), (5, 5), (2, 2)]
    x = torch.randn(2, 3, 40, 41)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 10, 10), (2, 16, 5, 5), (2, 16, 2, 2)]
    report = reparameterize(model, verify=x)
    assert report.max_rel_error <= 1e-5, report.summary()


def test_accepted_sizes_are_exactly_those_the_convs_tile():
    model = RepMLPNet(ODD, out_indices=(2,)).eval()
    expected = []
    for n in range(1, 200):
        sizes = real_stage_sizes(model, n, n)
        if sizes is not None:
            assert [s[0] for s in sizes] == [s[0] for s in model.stage_sizes(n, n)]
        if sizes is not None and all(s[0] >= p and s[0] % p == 0
                                     for s, p in zip(sizes, ODD['hs'])):
            expected.append(n)
    assert model.valid_input_sizes(199) == model.valid_input_sizes(199, axis=1) == expected
    assert expected[:5] == [40, 41, 42, 43, 160]  # not only the multiples of 160
    with torch.no_grad():
        for n in (40, 43, 163, 200):  # accepted: the blocks run
            model(torch.randn(1, 3, n, 40))
        for n in (39, 44, 80, 159):  # rejected before any block runs
            with pytest.raises(ValueError, match=f'cannot tile a {n}x40 input'):
                model(torch.randn(1, 3, n, 40))


@pytest.mark.parametrize('height, stage, stage_map, partition', [
    (44, 0, '11x10', '5x5'),  # stem: 11 is no multiple of 5
    (80, 2, '5x2', '2x2'),    # 80 -> 20 -> 10 -> 5: the third partition (2) fails
    (3, 0, '0x10', '5x5'),    # smaller than the patch: an empty map
])
def test_error_names_the_first_failing_stage_and_sizes_that_work(height, stage, stage_map,
                                                                  partition):
    model = RepMLPNet(ODD, out_indices=(2,)).eval()
    with pytest.raises(ValueError) as info:
        model(torch.randn(1, 3, height, 40))
    message = str(info.value)
    assert f'cannot tile a {height}x40 input: stage {stage} gets a {stage_map} map' in message
    assert f'which its {partition} partitions do not tile' in message
    assert 'Heights that work: [' in message and '\n' not in message
    listed = [int(v) for v in message.split('Heights that work: [')[1].split(']')[0].split(',')]
    assert len(listed) == 5 and all(n in model.valid_input_sizes(max(listed)) for n in listed)
    with torch.no_grad():
        model(torch.randn(1, 3, listed[0], 40))


@pytest.mark.parametrize('change, match', [
    (dict(hs=(0, 5, 2)), r"arch\['hs'\] must hold positive ints.*\(0, 5, 2\)"),
    (dict(ws=(5, -5, 2)), r"arch\['ws'\] must hold positive ints.*\(5, -5, 2\)"),
    (dict(sharesets_nums=(1, 0, 4)), r"arch\['sharesets_nums'\] must hold positive ints"),
    (dict(channels=(8, 0, 16)), r"arch\['channels'\] must hold positive ints"),
    (dict(channels=(8, -16, 16)), r"arch\['channels'\] must hold positive ints"),
    (dict(num_blocks=(1, 0, 1)), r"arch\['num_blocks'\] must hold positive ints"),
    (dict(hs=(5, 2.5, 2)), r"arch\['hs'\] must hold positive ints"),
    (dict(sharesets_nums=(1, 3, 4)), r'stage 1: channels \(16\) must be divisible by '
                                     r'sharesets_nums \(3\)'),
    (dict(reparam_conv_k=(0, 3)), r"reparam_conv_k'\] must hold positive odd ints.*\(0, 3\)"),
    (dict(reparam_conv_k=(2,)), r"reparam_conv_k'\] must hold positive odd ints.*\(2,\)"),
])
def test_arch_values_that_make_no_sense_fail_at_construction(change, match):
    with pytest.raises(ValueError, match=match):
        RepMLPNet(dict(ODD, **change), out_indices=(2,))


@pytest.mark.parametrize('kwargs, match', [
    (dict(globalperceptron_reduce=0), 'globalperceptron_reduce must be a positive int.*got 0'),
    (dict(globalperceptron_reduce=16), r'stage 0: channels \(8\) // globalperceptron_reduce '
                                       r'\(16\) leaves no channel'),
    (dict(patch_size=0), r'patch_size must be a positive int or a pair of them, got \(0, 0\)'),
    (dict(patch_size=(4, 0)), r'patch_size must be .*got \(4, 0\)'),
    (dict(in_channels=0), 'in_channels must be a positive int, got 0'),
])
def test_bad_network_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepMLPNet(ODD, out_indices=(2,), **kwargs)


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
