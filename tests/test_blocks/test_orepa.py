"""OREPA blocks (kxk, 1x1, large kernel, RepVGG-style): exact folding, priors, golden outputs."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rep_mm import reparameterize
from rep_mm.blocks import OREPA, OREPA1x1, OREPALargeConv, OREPARepVGGBlock
from rep_mm.blocks.orepa import frequency_prior

from ..conftest import load_golden, relative_error
from ..helpers import randomize_branches
from . import checks
from .checks import (check_half_precision_conversion, check_second_conversion_is_noop,
                     check_train_mode_conversion)

DEPLOY_CONV = {OREPA: 'orepa_reparam', OREPA1x1: 'or1x1_reparam',
               OREPALargeConv: 'or_large_reparam', OREPARepVGGBlock: 'rbr_reparam'}


def assert_converts_exactly(block: nn.Module, x: torch.Tensor, tolerance: float) -> nn.Module:
    fused = DEPLOY_CONV[type(block)]
    deployed = checks.assert_converts_exactly(block, x, tolerance, fused, randomize_branches, ('se.',))
    assert [n for n, _ in deployed.named_parameters() if not n.startswith('se.')] == [
        f'{fused}.weight', f'{fused}.bias']
    return deployed


kxk_shapes = dict(
    groups=st.sampled_from([1, 2, 4, 8]), per_group_in=st.integers(1, 2),
    per_group_out=st.integers(1, 3), kernel_size=st.sampled_from([1, 3, 5, 7]),
    stride=st.integers(1, 2), dilation=st.integers(1, 2), extra_padding=st.integers(-1, 1),
    height=st.integers(6, 10), width=st.integers(6, 10))


def _build_kxk(groups, per_group_in, per_group_out, kernel_size, stride, dilation,
               extra_padding, dtype):
    padding = max(dilation * (kernel_size // 2) + extra_padding, 0)
    return OREPA(groups * per_group_in, groups * per_group_out, kernel_size, stride, padding,
                 groups, dilation).to(dtype)


@settings(max_examples=50, deadline=None)
@given(**kxk_shapes)
def test_orepa_float32_conversion_is_exact(height, width, **shape):
    block = _build_kxk(dtype=torch.float32, **shape)
    assert_converts_exactly(block, torch.randn(2, block.in_channels, height, width), 1e-5)


@settings(max_examples=30, deadline=None)
@given(**kxk_shapes)
def test_orepa_float64_conversion_is_exact(height, width, **shape):
    block = _build_kxk(dtype=torch.float64, **shape)
    x = torch.randn(2, block.in_channels, height, width, dtype=torch.float64)
    assert_converts_exactly(block, x, 1e-10)


@settings(max_examples=30, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), per_group_in=st.integers(1, 3),
       per_group_out=st.integers(1, 3), stride=st.integers(1, 2),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_orepa_1x1_conversion_is_exact(groups, per_group_in, per_group_out, stride, dtype):
    block = OREPA1x1(groups * per_group_in, groups * per_group_out, 1, stride,
                     groups=groups).to(dtype)
    x = torch.randn(2, block.in_channels, 7, 6, dtype=dtype)
    assert_converts_exactly(block, x, 1e-5 if dtype == torch.float32 else 1e-10)


@settings(max_examples=30, deadline=None)
@given(groups=st.sampled_from([1, 2]), per_group_in=st.integers(1, 3),
       per_group_out=st.integers(1, 2), kernel_size=st.sampled_from([3, 5, 7]),
       stride=st.integers(1, 2), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_orepa_large_conv_conversion_is_exact(groups, per_group_in, per_group_out, kernel_size,
                                              stride, dtype):
    block = OREPALargeConv(groups * per_group_in, groups * per_group_out, kernel_size, stride,
                           groups=groups, nonlinear='ReLU').to(dtype)
    assert len([m for m in block.children() if hasattr(m, 'weight_gen')]) == (kernel_size - 1) // 2
    x = torch.randn(2, block.in_channels, 9, 8, dtype=dtype)
    assert_converts_exactly(block, x, 1e-5 if dtype == torch.float32 else 1e-10)


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), per_group_in=st.integers(1, 2),
       per_group_out=st.integers(1, 2), kernel_size=st.sampled_from([3, 5]),
       stride=st.integers(1, 2), use_se=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_orepa_repvgg_block_conversion_is_exact(groups, per_group_in, per_group_out, kernel_size,
                                                stride, use_se, dtype):
    c_in, c_out = 4 * groups * per_group_in, 4 * groups * per_group_out  # SE needs >= 16
    block = OREPARepVGGBlock(c_in, c_out, kernel_size, stride, groups=groups,
                             use_se=use_se and c_out >= 16).to(dtype)
    x = torch.randn(2, c_in, 7, 8, dtype=dtype)
    assert_converts_exactly(block, x, 1e-5 if dtype == torch.float32 else 1e-10)


def test_repvgg_block_with_groups_matches_running_its_branches():
    """groups > 1 (the original crashes): the dense branch equals a grouped conv with W."""
    block = randomize_branches(OREPARepVGGBlock(8, 8, 3, groups=2), 3).eval()
    dense = block.rbr_dense
    assert block.rbr_identity is not None and dense.vector.shape == (6, 8)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        manual = dense.bn(nn.functional.conv2d(x, dense.weight_gen(), padding=1, groups=2))
        assert torch.equal(dense(x), manual)
    assert_converts_exactly(block, x, 1e-5)


@pytest.mark.parametrize('kernel_size', [1, 3, 5, 7, 9])
def test_frequency_prior_fills_every_tap_for_any_odd_kernel(kernel_size):
    out = 6
    prior = frequency_prior(out, kernel_size)
    assert prior.shape == (out, kernel_size, kernel_size) and torch.isfinite(prior).all()
    last = kernel_size - 1
    for i, h, w in [(0, 0, min(1, last)), (2, last, 0), (3, 0, last), (5, kernel_size // 2, last)]:
        expected = (math.cos(math.pi * (h + 0.5) * (i + 1) / kernel_size) if i < out / 2 else
                    math.cos(math.pi * (w + 0.5) * (i + 1 - out / 2) / kernel_size))
        assert prior[i, h, w].item() == pytest.approx(expected, abs=1e-6)
    block = OREPA(2, out, kernel_size)
    assert torch.equal(block.weight_orepa_prior, prior)


def test_two_blocks_built_alike_start_identical_apart_from_random_kernels():
    torch.manual_seed(0)
    a = OREPA(4, 4, 5)
    torch.manual_seed(0)
    b = OREPA(4, 4, 5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name  # no uninitialised memory anywhere (the original has some)


def test_initial_scales_and_single_init():
    block = OREPA(4, 4, 3)
    assert block.vector[:, 0].tolist() == [0.25, 0.25, 0.0, 0.5, 1.0, 0.5]
    single = OREPA(4, 4, 3, single_init=True).eval()
    assert single.vector[:, 0].tolist() == [1.0, 0, 0, 0, 0, 0]
    with torch.no_grad():
        assert torch.allclose(single.weight_gen(), single.weight_orepa_origin)


def test_conversion_in_train_mode_and_converting_twice():
    block = randomize_branches(OREPA(4, 6, 3, groups=2), 5)
    check_train_mode_conversion(block, 'orepa_reparam', torch.randn(3, 4, 7, 7))
    check_second_conversion_is_noop(block, 'orepa_reparam')


def test_reparameterize_converts_nested_large_conv_once():
    model = nn.Sequential(OREPALargeConv(3, 4, 5, 2, nonlinear='ReLU'), OREPA(4, 4, 3),
                          OREPA1x1(4, 8))
    randomize_branches(model, 7).eval()
    report = reparameterize(model, verify=torch.randn(2, 3, 12, 12))
    assert report.converted == ['0', '1', '2']
    assert report.max_rel_error <= 1e-5


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('cls, args', [(OREPA, (8, 8, 3)), (OREPALargeConv, (8, 8, 5)),
                                       (OREPA1x1, (8, 8))])
def test_half_precision_conversion_keeps_dtype(cls, args, dtype):
    block = randomize_branches(cls(*args), 3)
    check_half_precision_conversion(block, DEPLOY_CONV[cls], dtype, torch.randn(2, 8, 7, 7))


def test_weight_gen_is_differentiable_in_every_branch():
    block = randomize_branches(OREPA(4, 4, 3), 1)  # the prior's initial scale is 0: move it
    kernel, bias = block.equivalent_kernel_bias()
    (kernel.square().sum() + bias.sum()).backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('cls, kwargs, match', [
    (OREPA, dict(in_channels=4, out_channels=4, kernel_size=4), 'odd'),
    (OREPA, dict(in_channels=6, out_channels=4, groups=4), 'divisible'),
    (OREPA, dict(in_channels=4, out_channels=4, groups=2, internal_channels_1x1_3x3=3),
     'internal_channels'),
    (OREPA1x1, dict(in_channels=4, out_channels=4, kernel_size=3), 'kernel_size=3'),
    (OREPALargeConv, dict(in_channels=4, out_channels=4, kernel_size=1), '>= 3'),
    (OREPARepVGGBlock, dict(in_channels=4, out_channels=4, padding=0), 'at least'),
    (OREPA, dict(in_channels=4, out_channels=4, norm_cfg=dict(type='LN')), 'BatchNorm'),
])
def test_bad_arguments_are_explained(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_nonlinear_must_be_a_module_config_or_name():
    with pytest.raises(TypeError, match='nonlinear must be'):
        OREPA(4, 4, nonlinear=3)


GOLDEN = {
    'OREPA': (OREPA, ['orepa_block_k3_g1', 'orepa_block_k3_g2', 'orepa_block_k3_s2',
                      'orepa_block_k3_depthwise']),
    'OREPA_1x1': (OREPA1x1, ['orepa_1x1_expand', 'orepa_1x1_reduce_s2']),
    'OREPA_LargeConv': (OREPALargeConv, ['orepa_largeconv_k7_s2', 'orepa_largeconv_stem']),
    'RepVGGBlock_OREPA': (OREPARepVGGBlock, ['orepa_repvgg_block_identity',
                                             'orepa_repvgg_block_s2']),
}


@pytest.mark.parametrize('official, case', [(o, c) for o, (_, cases) in GOLDEN.items()
                                            for c in cases])
def test_golden_blocks_of_the_original_code(official, case):
    golden = load_golden(case)
    assert golden['builder']['class'] == official
    cls = GOLDEN[official][0]
    block = cls(**golden['builder']['kwargs'])
    assert list(block.state_dict()) == list(golden['train_state_dict'])
    block.load_state_dict(golden['train_state_dict'], strict=True)
    block.eval()
    with torch.no_grad():
        # the 7x7 kernels give outputs of magnitude ~50: compare relative to the output's scale
        assert relative_error(golden['train_output'], block(golden['input'])) <= 1e-5
        block.switch_to_deploy()
        assert list(block.state_dict()) == list(golden['deploy_state_dict'])
        scale = max(v.abs().max().item() for v in golden['deploy_state_dict'].values())
        for key, value in golden['deploy_state_dict'].items():
            torch.testing.assert_close(block.state_dict()[key], value, rtol=1e-5,
                                       atol=1e-6 * scale)
        assert relative_error(golden['deploy_output'], block(golden['input'])) <= 1e-5
    direct = cls(**golden['builder']['deploy_kwargs'])
    direct.load_state_dict(golden['deploy_state_dict'], strict=True)


def test_repvgg_a0_of_orepa_blocks_matches_the_official_manifest():
    """The block is the right brick for an OREPA RepVGG-A0: keys and shapes, train and deploy."""
    from ..conftest import load_manifest

    def a0(deploy):
        model, channels = nn.Module(), 48
        model.stage0 = OREPARepVGGBlock(3, 48, 3, stride=2, deploy=deploy)
        for stage, (blocks, width) in enumerate(zip((2, 4, 14, 1), (48, 96, 192, 1280)), 1):
            layers = [OREPARepVGGBlock(channels if i == 0 else width, width, 3,
                                       stride=2 if i == 0 else 1, deploy=deploy)
                      for i in range(blocks)]
            setattr(model, f'stage{stage}', nn.Sequential(*layers))
            channels = width
        return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]

    for mode in ('train', 'deploy'):
        official = [(k, s) for k, s in load_manifest(f'OREPA-RepVGG-A0__{mode}')
                    if not k.startswith('linear.')]
        assert a0(mode == 'deploy') == official
