"""DiverseBranchBlock: exact folding over shapes (incl. depthwise), dtypes; golden outputs."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rep_mm.blocks import DiverseBranchBlock

from ..conftest import load_golden
from ..helpers import randomize_branches
from . import checks
from .checks import (check_golden_block, check_half_precision_conversion,
                     check_second_conversion_is_noop, check_train_mode_conversion)


def assert_converts_exactly(block: nn.Module, x: torch.Tensor, tolerance: float) -> nn.Module:
    return checks.assert_converts_exactly(block, x, tolerance, 'dbb_reparam', randomize_branches)


block_shapes = dict(
    groups=st.sampled_from([1, 2, 'depthwise']), per_group_in=st.integers(1, 3),
    per_group_out=st.integers(1, 3), kernel_size=st.sampled_from([1, 3, 5, 7]),
    stride=st.integers(1, 2), internal=st.sampled_from([None, 'double', 'odd']),
    height=st.integers(5, 9), width=st.integers(5, 9))


def _build(groups, per_group_in, per_group_out, kernel_size, stride, internal, dtype):
    if groups == 'depthwise':
        groups = c_in = c_out = 2 * per_group_in
    else:
        c_in, c_out = groups * per_group_in, groups * per_group_out
    internal = {None: None, 'double': 2 * c_in, 'odd': groups * 3}[internal]
    return DiverseBranchBlock(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups,
                              internal_channels_1x1_3x3=internal).to(dtype)


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


def test_branch_layout_follows_the_groups():
    dense = DiverseBranchBlock(8, 16, 3, padding=1)
    assert hasattr(dense, 'dbb_1x1') and hasattr(dense.dbb_avg, 'conv')
    assert hasattr(dense.dbb_1x1_kxk, 'idconv1')
    depthwise = DiverseBranchBlock(8, 8, 3, padding=1, groups=8)
    assert not hasattr(depthwise, 'dbb_1x1') and not hasattr(depthwise.dbb_avg, 'conv')
    assert depthwise.dbb_1x1_kxk.conv1.weight.shape == (16, 1, 1, 1)


def test_channels_that_differ_keep_the_1x1_path_when_groups_equal_out_channels():
    block = DiverseBranchBlock(8, 4, 3, padding=1, groups=4)  # the original cannot run this
    assert hasattr(block, 'dbb_1x1') and hasattr(block.dbb_avg, 'conv')
    deployed = assert_converts_exactly(block, torch.randn(2, 8, 6, 6), 1e-5)
    assert deployed.dbb_reparam.weight.shape == (4, 2, 3, 3)


def test_identity_based_1x1_starts_as_identity():
    block = DiverseBranchBlock(4, 4, 3, padding=1).eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(block.dbb_1x1_kxk.idconv1(x), x)


def test_bn_and_pad_pads_with_the_bn_value_of_zero():
    block = randomize_branches(DiverseBranchBlock(3, 3, 5, padding=2), 4).eval()
    layer = block.dbb_1x1_kxk.bn1
    with torch.no_grad():
        out = layer(torch.zeros(1, 3, 4, 4))
    assert out.shape == (1, 3, 8, 8)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-7)


def test_conversion_in_train_mode_uses_running_statistics():
    block = randomize_branches(DiverseBranchBlock(4, 6, 3, padding=1, groups=2), 5)
    check_train_mode_conversion(block, 'dbb_reparam', torch.randn(3, 4, 7, 7))


def test_converting_twice_is_a_no_op():
    block = randomize_branches(DiverseBranchBlock(4, 4, 3, padding=1), 2).eval()
    check_second_conversion_is_noop(block, 'dbb_reparam')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_conversion_keeps_dtype(dtype):
    block = randomize_branches(DiverseBranchBlock(8, 8, 3, padding=1), 3)
    check_half_precision_conversion(block, 'dbb_reparam', dtype, torch.randn(2, 8, 6, 6))


def test_syncbn_and_single_init():
    block = DiverseBranchBlock(4, 4, 3, padding=1, norm_cfg=dict(type='SyncBN'), single_init=True)
    assert isinstance(block.dbb_origin.bn, nn.SyncBatchNorm)
    assert torch.equal(block.dbb_1x1_kxk.bn2.weight, torch.zeros(4))
    assert torch.equal(block.dbb_avg.avgbn.weight, torch.zeros(4))
    block.eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():  # with zero gammas and zero betas, only the origin conv-BN remains
        assert torch.allclose(block(x), block.dbb_origin(x), atol=1e-6)
    assert_converts_exactly(block, x, 1e-5)


def test_equivalent_kernel_bias_is_differentiable():
    block = DiverseBranchBlock(4, 4, 3, padding=1)
    kernel, bias = block.equivalent_kernel_bias()
    (kernel.square().sum() + bias.sum()).backward()
    assert block.dbb_avg.conv.weight.grad is not None
    assert block.dbb_1x1_kxk.idconv1.weight.grad is not None
    assert block.dbb_1x1_kxk.conv2.weight.grad is not None


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=4, out_channels=4, kernel_size=2, padding=1), 'odd'),
    (dict(in_channels=6, out_channels=4, kernel_size=3, groups=4), 'divisible'),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding=0), 'padding == kernel_size'),
    (dict(in_channels=4, out_channels=4, kernel_size=3, dilation=2), 'dilation=1'),
    (dict(in_channels=4, out_channels=4, kernel_size=3, groups=2, internal_channels_1x1_3x3=5),
     'internal_channels'),
])
def test_bad_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiverseBranchBlock(**kwargs)


@pytest.mark.parametrize('case', ['dbb_block_k3_s1', 'dbb_block_k3_s2_relu', 'dbb_block_k3_g2',
                                  'dbb_block_k3_internal16', 'dbb_block_k3_depthwise',
                                  'dbb_block_k5_s1'])
def test_golden_blocks_of_the_original_code(case):
    check_golden_block(DiverseBranchBlock, load_golden(case), state_atol=1e-5)
