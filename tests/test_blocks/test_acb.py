"""ACBlock: exact folding over shapes, padding (incl. the crop path), dtypes; golden outputs."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rep_mm.blocks import ACBlock
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import load_golden, relative_error
from . import checks
from .checks import (check_golden_block, check_half_precision_conversion,
                     check_second_conversion_is_noop, check_train_mode_conversion)


def assert_converts_exactly(block: nn.Module, x: torch.Tensor, tolerance: float) -> nn.Module:
    return checks.assert_converts_exactly(block, x, tolerance, 'fused_conv',
                                          randomize_bn_statistics)


block_shapes = dict(
    groups=st.sampled_from([1, 2, 3]), per_group_in=st.integers(1, 3),
    per_group_out=st.integers(1, 3), kernel_size=st.sampled_from([3, 5]),
    stride=st.integers(1, 2), dilation=st.integers(1, 2), padding_offset=st.integers(-2, 1),
    height=st.integers(9, 12), width=st.integers(9, 12))


def _build(groups, per_group_in, per_group_out, kernel_size, stride, dilation, padding_offset,
           dtype):
    padding = max(dilation * (kernel_size // 2) + padding_offset, 0)
    return ACBlock(groups * per_group_in, groups * per_group_out, kernel_size, stride, padding,
                   dilation, groups).to(dtype)


@settings(max_examples=60, deadline=None)
@given(**block_shapes)
def test_float32_conversion_is_exact(height, width, **shape):
    block = _build(dtype=torch.float32, **shape)
    x = torch.randn(2, block.in_channels, height, width)
    assert_converts_exactly(block, x, 1e-5)


@settings(max_examples=40, deadline=None)
@given(**block_shapes)
def test_float64_conversion_is_exact(height, width, **shape):
    block = _build(dtype=torch.float64, **shape)
    x = torch.randn(2, block.in_channels, height, width, dtype=torch.float64)
    assert_converts_exactly(block, x, 1e-10)


@pytest.mark.parametrize('padding, crop', [(0, 1), (1, 0), (2, 0)])
def test_asymmetric_kernels_see_the_centre_row_and_column(padding, crop):
    block = ACBlock(2, 3, 3, padding=padding)
    assert block.crop == crop
    x = torch.randn(1, 2, 7, 8)
    with torch.no_grad():
        square = block.square_conv(x)
        ver = block.ver_conv(x[:, :, :, crop:x.shape[3] - crop])
        hor = block.hor_conv(x[:, :, crop:x.shape[2] - crop, :])
    assert square.shape == ver.shape == hor.shape


def test_reflect_padding_converts_exactly():
    block = ACBlock(4, 4, 3, padding=1, padding_mode='reflect')
    assert_converts_exactly(block, torch.randn(2, 4, 7, 6), 1e-5)


def test_conversion_in_train_mode_uses_running_statistics_and_keeps_the_mode():
    block = randomize_bn_statistics(ACBlock(4, 6, 3, padding=1), 3)
    check_train_mode_conversion(block, 'fused_conv', torch.randn(2, 4, 6, 6))


def test_converting_twice_is_a_no_op():
    block = randomize_bn_statistics(ACBlock(4, 4, 3, padding=1), 2).eval()
    check_second_conversion_is_noop(block, 'fused_conv')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_conversion_keeps_dtype(dtype):
    block = randomize_bn_statistics(ACBlock(8, 8, 3, padding=1), 3)
    check_half_precision_conversion(block, 'fused_conv', dtype, torch.randn(2, 8, 6, 6))


def test_deploy_flag_builds_the_converted_keys_and_nonlinear_is_applied():
    trained = randomize_bn_statistics(ACBlock(4, 4, 3, padding=1, nonlinear='ReLU'), 1).eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        expected = trained(x)
    assert expected.min() >= 0 and (expected == 0).any()
    trained.switch_to_deploy()
    direct = ACBlock(4, 4, 3, padding=1, deploy=True, nonlinear=nn.ReLU())
    assert list(direct.state_dict()) == list(trained.state_dict()) == ['fused_conv.weight',
                                                                       'fused_conv.bias']
    direct.load_state_dict(trained.state_dict(), strict=True)
    with torch.no_grad():
        assert relative_error(expected, direct.eval()(x)) <= 1e-5


def test_gamma_options_initialise_all_branch_norms():
    block = ACBlock(2, 2, 3, padding=1, reduce_gamma=True)
    for bn in (block.square_bn, block.ver_bn, block.hor_bn):
        assert torch.allclose(bn.weight, torch.full((2,), 1 / 3))
    block = ACBlock(2, 2, 3, padding=1, gamma_init=0.5, use_affine=True)
    assert torch.equal(block.hor_bn.weight, torch.full((2,), 0.5))
    no_affine = ACBlock(2, 2, 3, padding=1, use_affine=False)
    assert no_affine.square_bn.weight is None
    assert_converts_exactly(no_affine, torch.randn(1, 2, 6, 6), 1e-5)


def test_equivalent_kernel_bias_is_differentiable():
    block = ACBlock(3, 3, 3, padding=1)
    kernel, bias = block.equivalent_kernel_bias()
    (kernel.square().sum() + bias.sum()).backward()
    for conv in (block.square_conv, block.ver_conv, block.hor_conv):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=4, out_channels=4, kernel_size=2), 'odd'),
    (dict(in_channels=6, out_channels=4, kernel_size=3, groups=4), 'divisible'),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding=-1), 'padding'),
    (dict(in_channels=4, out_channels=4, kernel_size=3, reduce_gamma=True, gamma_init=1.0),
     'either'),
    (dict(in_channels=4, out_channels=4, kernel_size=3, norm_cfg=dict(type='GN', num_groups=2)),
     'BatchNorm'),
])
def test_bad_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ACBlock(**kwargs)


@pytest.mark.parametrize('case', ['acb_block_k3_p1', 'acb_block_k3_s2_g2', 'acb_block_k3_p0_crop'])
def test_golden_blocks_of_the_original_code(case):
    check_golden_block(ACBlock, load_golden(case))
