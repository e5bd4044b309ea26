"""rep_mm.fusion composition functions (DBB / OREPA), checked in float64 against the convs."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from rep_mm import fusion

F64 = dict(dtype=torch.float64)


def pad_with(x: torch.Tensor, pixels: int, value: torch.Tensor) -> torch.Tensor:
    """Pad every side by ``pixels`` with a per-channel value (DBB's BN-and-pad)."""
    value = value.reshape(1, -1, 1, 1)
    return F.pad(x - value, [pixels] * 4) + value


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), per_group_in=st.integers(1, 3),
       per_group_mid=st.integers(1, 3), per_group_out=st.integers(1, 3),
       k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2), with_bias=st.booleans())
def test_compose_1x1_kxk_equals_the_two_convs(groups, per_group_in, per_group_mid,
                                             per_group_out, k, stride, with_bias):
    c_in, mid, out = groups * per_group_in, groups * per_group_mid, groups * per_group_out
    x = torch.randn(2, c_in, 9, 8, **F64)
    first = torch.randn(mid, per_group_in, 1, 1, **F64)
    second = torch.randn(out, per_group_mid, k, k, **F64)
    b1 = torch.randn(mid, **F64) if with_bias else torch.zeros(mid, **F64)
    hidden = F.conv2d(x, first, b1, groups=groups)
    expected = F.conv2d(pad_with(hidden, k // 2, b1), second, stride=stride, groups=groups)
    kernel, bias = fusion.compose_1x1_kxk(first, second, groups, b1 if with_bias else None)
    assert kernel.shape == (out, per_group_in, k, k)
    actual = F.conv2d(x, kernel, bias, stride=stride, padding=k // 2, groups=groups)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2, 3]), per_group=st.integers(1, 3),
       k1=st.sampled_from([1, 3, 5]), k2=st.sampled_from([1, 3]), pad=st.integers(0, 3),
       stride=st.integers(1, 2))
def test_compose_kernels_equals_stacked_convs(groups, per_group, k1, k2, pad, stride):
    c = groups * per_group
    x = torch.randn(2, c, 10, 9, **F64)
    first = torch.randn(c + groups, per_group, k1, k1, **F64)  # C1 = groups * (per_group + 1)
    second = torch.randn(2 * groups, per_group + 1, k2, k2, **F64)
    expected = F.conv2d(F.conv2d(x, first, padding=pad, groups=groups), second, stride=stride,
                        groups=groups)
    kernel = fusion.compose_kernels(first, second, groups)
    assert kernel.shape == (2 * groups, per_group, k1 + k2 - 1, k1 + k2 - 1)
    actual = F.conv2d(x, kernel, stride=stride, padding=pad, groups=groups)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), per_group_in=st.integers(1, 3),
       per_group_out=st.integers(1, 3), multiplier=st.integers(1, 3),
       k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2))
def test_depthwise_separable_kernel_equals_the_two_convs(groups, per_group_in, per_group_out,
                                                         multiplier, k, stride):
    c_in, out = groups * per_group_in, groups * per_group_out
    x = torch.randn(2, c_in, 9, 9, **F64)
    dw = torch.randn(c_in * multiplier, 1, k, k, **F64)
    pw = torch.randn(out, c_in * multiplier // groups, 1, 1, **F64)
    expected = F.conv2d(F.conv2d(x, dw, stride=stride, padding=k // 2, groups=c_in), pw,
                        groups=groups)
    kernel = fusion.depthwise_separable_kernel(dw, pw, c_in, groups)
    actual = F.conv2d(x, kernel, stride=stride, padding=k // 2, groups=groups)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('out, in_per_group, groups', [(6, 6, 1), (12, 3, 2), (8, 1, 8)])
def test_channel_identity_copies_inputs(out, in_per_group, groups):
    x = torch.randn(2, in_per_group * groups, 4, 5, **F64)
    kernel = fusion.channel_identity(out, in_per_group, dtype=torch.float64)
    y = F.conv2d(x, kernel, groups=groups)
    per_group_out = out // groups
    for o in range(out):
        source = (o // per_group_out) * in_per_group + o % in_per_group
        assert torch.equal(y[:, o], x[:, source])


def test_composition_rejects_kernels_that_do_not_chain():
    with pytest.raises(ValueError, match='do not chain'):
        fusion.compose_1x1_kxk(torch.zeros(4, 2, 1, 1), torch.zeros(4, 3, 3, 3), 2)
    with pytest.raises(ValueError, match='must be 1x1'):
        fusion.compose_1x1_kxk(torch.zeros(4, 2, 3, 3), torch.zeros(4, 2, 3, 3), 2)
    with pytest.raises(ValueError, match='do not chain'):
        fusion.compose_kernels(torch.zeros(4, 2, 3, 3), torch.zeros(4, 4, 3, 3), 2)
    with pytest.raises(ValueError, match='expects 16 channels'):
        fusion.depthwise_separable_kernel(torch.zeros(8, 1, 3, 3), torch.zeros(4, 8, 1, 1), 4,
                                          groups=2)


def test_composition_folds_half_precision_in_float32():
    kernel, bias = fusion.compose_1x1_kxk(torch.ones(2, 2, 1, 1, dtype=torch.float16),
                                          torch.ones(2, 2, 3, 3, dtype=torch.float16),
                                          first_bias=torch.ones(2, dtype=torch.float16))
    assert kernel.dtype == bias.dtype == torch.float32
    assert torch.equal(kernel, torch.full((2, 2, 3, 3), 2.0))
    assert torch.equal(bias, torch.full((2,), 18.0))
