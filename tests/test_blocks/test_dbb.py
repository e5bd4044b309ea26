"""DiverseBranchBlock: exact folding over shapes (incl. depthwise), dtypes; golden outputs."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rep_mm import reparameterize
from rep_mm.blocks import DiverseBranchBlock
from rep_mm.testing import randomize_bn_statistics

from ..conftest import load_golden, relative_error


@torch.no_grad()
def randomize(block: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics, and move the zero-initialised identity-based 1x1 off zero."""
    randomize_bn_statistics(block, seed)
    generator = torch.Generator().manual_seed(seed)
    for name, param in block.named_parameters():
        if name.endswith('idconv1.weight'):
            param.copy_(torch.randn(param.shape, generator=generator).to(param.dtype) * 0.1)
    return block


def assert_converts_exactly(block: nn.Module, x: torch.Tensor, tolerance: float) -> nn.Module:
    randomize(block, seed=x.numel()).eval()
    with torch.no_grad():
        expected = block(x)
        deployed = copy.deepcopy(block)
        deployed.switch_to_deploy()
        actual = deployed(x)
    assert relative_error(expected, actual) <= tolerance
    assert [n for n, m in deployed.named_modules() if isinstance(m, nn.Conv2d)] == ['dbb_reparam']
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    return deployed


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
    block = randomize(DiverseBranchBlock(3, 3, 5, padding=2), 4).eval()
    layer = block.dbb_1x1_kxk.bn1
    with torch.no_grad():
        out = layer(torch.zeros(1, 3, 4, 4))
    assert out.shape == (1, 3, 8, 8)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-7)


def test_conversion_in_train_mode_uses_running_statistics():
    block = randomize(DiverseBranchBlock(4, 6, 3, padding=1, groups=2), 5)
    x = torch.randn(3, 4, 7, 7)
    with torch.no_grad():
        expected = block.eval()(x)
    block.train()
    block.switch_to_deploy()
    assert block.training and block.dbb_reparam.training
    with torch.no_grad():
        assert relative_error(expected, block.eval()(x)) <= 1e-5


def test_converting_twice_is_a_no_op():
    block = randomize(DiverseBranchBlock(4, 4, 3, padding=1), 2).eval()
    block.switch_to_deploy()
    state = {k: v.clone() for k, v in block.state_dict().items()}
    conv = block.dbb_reparam
    reparameterize(block)
    assert block.dbb_reparam is conv
    assert all(torch.equal(state[k], v) for k, v in block.state_dict().items())


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_conversion_keeps_dtype(dtype):
    block = randomize(DiverseBranchBlock(8, 8, 3, padding=1), 3).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = block(x)
    block = block.to(dtype)
    block.switch_to_deploy()
    assert block.dbb_reparam.weight.dtype == dtype
    with torch.no_grad():
        actual = block.float()(x)
    assert relative_error(expected, actual) <= (1e-2 if dtype == torch.bfloat16 else 2e-3)


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
    golden = load_golden(case)
    block = DiverseBranchBlock(**golden['builder']['kwargs'])
    assert list(block.state_dict()) == list(golden['train_state_dict'])
    block.load_state_dict(golden['train_state_dict'], strict=True)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(golden['input']), golden['train_output'],
                                   rtol=1e-5, atol=1e-5)
        block.switch_to_deploy()
        assert list(block.state_dict()) == list(golden['deploy_state_dict'])
        for key, value in golden['deploy_state_dict'].items():
            torch.testing.assert_close(block.state_dict()[key], value, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block(golden['input']), golden['deploy_output'],
                                   rtol=1e-5, atol=1e-5)
    direct = DiverseBranchBlock(**golden['builder']['deploy_kwargs'])
    direct.load_state_dict(golden['deploy_state_dict'], strict=True)
