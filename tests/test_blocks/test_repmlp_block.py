"""RepMLPBlock: locality injection is exact over share-sets, partitions and conv kernels."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rep_mm.blocks import RepMLPBlock
from rep_mm.fusion import conv_to_fc
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import load_golden, relative_error
from .checks import check_golden_block


def check_block(block, x, tolerance):
    randomize_bn_statistics(block, seed=int(x.shape[-1] * 7 + x.shape[-2]))
    block.eval()
    with torch.no_grad():
        expected = block(x)
        deployed = copy.deepcopy(block)
        deployed.local_inject()
        assert relative_error(expected, deployed(x)) <= tolerance
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert not any(name.startswith('repconv') for name, _ in deployed.named_children())
    return deployed


shapes = dict(
    sharesets=st.sampled_from([1, 2, 4]), sets_per_share=st.integers(1, 3),
    h=st.integers(2, 5), w=st.integers(2, 5), parts_h=st.integers(1, 3),
    parts_w=st.integers(1, 3),
    kernels=st.sampled_from([(), (1,), (3,), (1, 3), (1, 3, 5), (5,)]))


@settings(max_examples=40, deadline=None)
@given(**shapes)
def test_float32_locality_injection_is_exact(sharesets, sets_per_share, h, w, parts_h, parts_w,
                                             kernels):
    channels = sharesets * sets_per_share * 4
    block = RepMLPBlock(channels, channels, h, w, kernels, globalperceptron_reduce=4,
                        num_sharesets=sharesets)
    check_block(block, torch.randn(2, channels, h * parts_h, w * parts_w), 1e-5)


@settings(max_examples=25, deadline=None)
@given(**shapes)
def test_float64_locality_injection_is_exact(sharesets, sets_per_share, h, w, parts_h, parts_w,
                                             kernels):
    channels = sharesets * sets_per_share * 4
    block = RepMLPBlock(channels, channels, h, w, kernels, num_sharesets=sharesets).double()
    x = torch.randn(2, channels, h * parts_h, w * parts_w, dtype=torch.float64)
    check_block(block, x, 1e-10)


def test_conv_to_fc_equals_the_conv_on_a_partition():
    kernel = torch.randn(3, 1, 3, 5, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    x = torch.randn(4, 3, 6, 7, dtype=torch.float64)
    expected = nn.functional.conv2d(x, kernel, bias, padding=(1, 2), groups=3)
    weight, fc_bias = conv_to_fc(kernel, bias, 6, 7)
    assert weight.shape == (3 * 42, 42)
    flat = x.reshape(4, 3, 42)
    result = torch.stack([flat[:, g] @ weight[g * 42:(g + 1) * 42].t() for g in range(3)], 1)
    result = result + fc_bias.reshape(3, 42)
    assert torch.allclose(result.reshape_as(expected), expected, atol=1e-12)
    with pytest.raises(ValueError, match='one input channel'):
        conv_to_fc(torch.zeros(3, 2, 3, 3), torch.zeros(3), 4, 4)


def test_idempotent_and_train_mode_conversion():
    block = randomize_bn_statistics(RepMLPBlock(8, 8, 4, 4, (1, 3), num_sharesets=2), 1)
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        expected = block.eval()(x)
    block.train().switch_to_deploy()
    fc3 = block.fc3
    block.local_inject()
    assert block.fc3 is fc3 and block.fc3.training
    with torch.no_grad():
        assert relative_error(expected, block.eval()(x)) <= 1e-5


def test_untileable_feature_map_is_explained():
    block = RepMLPBlock(4, 4, 4, 4)
    with pytest.raises(ValueError, match='multiples of 4 and 4; got 6x8'):
        block(torch.randn(1, 4, 6, 8))


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=4, out_channels=8, h=2, w=2), 'must equal'),
    (dict(in_channels=6, out_channels=6, h=2, w=2, num_sharesets=4), 'divisible'),
    (dict(in_channels=4, out_channels=4, h=2, w=2, reparam_conv_k=(2,)), 'odd'),
    (dict(in_channels=2, out_channels=2, h=2, w=2, globalperceptron_reduce=4), 'bottleneck'),
])
def test_bad_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepMLPBlock(**kwargs)


def test_golden_non_square_block_of_the_original_code():
    check_golden_block(RepMLPBlock, load_golden('repmlp_block_nonsquare'), 'local_inject',
                       direct=False)
