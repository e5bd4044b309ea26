"""rep_mm.fusion: every equation checked in float64 against running the branches."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from rep_mm import fusion
from rep_mm.verify.bn_statistics import randomize_bn_statistics

F64 = dict(dtype=torch.float64)


def random_bn(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).double()
    randomize_bn_statistics(bn, seed)
    return bn.eval()


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), per_group_in=st.integers(1, 3),
       per_group_out=st.integers(1, 3), k=st.sampled_from([1, 3, 5]),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), with_bias=st.booleans())
def test_fuse_bn_equals_conv_then_bn(groups, per_group_in, per_group_out, k, stride, dilation,
                                     with_bias):
    c_in, c_out = groups * per_group_in, groups * per_group_out
    x = torch.randn(2, c_in, 9, 9, **F64)
    w = torch.randn(c_out, per_group_in, k, k, **F64)
    b = torch.randn(c_out, **F64) if with_bias else None
    bn = random_bn(c_out, seed=k + groups)
    conv = dict(stride=stride, padding=dilation * (k // 2), dilation=dilation, groups=groups)
    expected = bn(F.conv2d(x, w, b, **conv))
    kernel, bias = fusion.fuse_bn(w, bn, b)
    assert torch.allclose(F.conv2d(x, kernel, bias, **conv), expected, rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(groups=st.sampled_from([1, 2, 3, 6]), k=st.sampled_from([1, 3, 5, 7]),
       dilation=st.integers(1, 3))
def test_identity_kernel_is_identity(groups, k, dilation):
    x = torch.randn(2, 6, 8, 7, **F64)
    kernel = fusion.identity_kernel(6, groups, k, dtype=torch.float64)
    assert kernel.shape == (6, 6 // groups, k, k)
    y = F.conv2d(x, kernel, padding=dilation * (k // 2), dilation=dilation, groups=groups)
    assert torch.equal(y, x)


@settings(max_examples=30, deadline=None)
@given(k=st.sampled_from([1, 3, 5]), target=st.sampled_from([3, 5, 7]),
       dilation=st.integers(1, 2), stride=st.integers(1, 2))
def test_pad_kernel_keeps_the_conv(k, target, dilation, stride):
    if target < k:
        with pytest.raises(ValueError, match='cannot centre'):
            fusion.pad_kernel(torch.zeros(1, 1, k, k), target)
        return
    x = torch.randn(1, 3, 11, 10, **F64)
    w = torch.randn(4, 3, k, k, **F64)
    small = F.conv2d(x, w, stride=stride, padding=dilation * (k // 2), dilation=dilation)
    large = F.conv2d(x, fusion.pad_kernel(w, target), stride=stride,
                     padding=dilation * (target // 2), dilation=dilation)
    assert torch.allclose(small, large, rtol=0, atol=1e-12)


def test_pad_kernel_rejects_odd_difference():
    with pytest.raises(ValueError, match='even'):
        fusion.pad_kernel(torch.zeros(1, 1, 2, 2), 3)


@pytest.mark.parametrize('groups', [1, 2, 4])
@pytest.mark.parametrize('k', [2, 3])
def test_avg_pool_kernel_matches_avg_pool(groups, k):
    x = torch.randn(2, 4, 9, 9, **F64)
    kernel = fusion.avg_pool_kernel(4, groups, k, dtype=torch.float64)
    expected = F.avg_pool2d(x, k, stride=1, padding=0)
    assert torch.allclose(F.conv2d(x, kernel, groups=groups), expected, rtol=0, atol=1e-14)


def test_sum_branches_adds_padded_kernels():
    x = torch.randn(2, 3, 8, 8, **F64)
    w3, b3 = torch.randn(5, 3, 3, 3, **F64), torch.randn(5, **F64)
    w1, b1 = torch.randn(5, 3, 1, 1, **F64), torch.randn(5, **F64)
    kernel, bias = fusion.sum_branches([(w3, b3), (w1, b1)])
    expected = F.conv2d(x, w3, b3, padding=1) + F.conv2d(x, w1, b1)
    assert torch.allclose(F.conv2d(x, kernel, bias, padding=1), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match='at least one'):
        fusion.sum_branches([])


def test_fuse_bn_handles_non_affine_and_syncbn():
    x = torch.randn(2, 3, 6, 6, **F64)
    w = torch.randn(4, 3, 3, 3, **F64)
    for bn in (nn.BatchNorm2d(4, affine=False).double(), nn.SyncBatchNorm(4).double()):
        randomize_bn_statistics(bn, 3)
        bn.eval()
        # SyncBN in eval mode on one process computes exactly the BN formula
        expected = F.batch_norm(F.conv2d(x, w, padding=1), bn.running_mean, bn.running_var,
                                bn.weight, bn.bias, False, 0.0, bn.eps)
        kernel, bias = fusion.fuse_bn(w, bn)
        assert torch.allclose(F.conv2d(x, kernel, bias, padding=1), expected, atol=1e-12)


def test_fuse_bn_errors_are_explicit():
    with pytest.raises(TypeError, match='BatchNorm'):
        fusion.fuse_bn(torch.zeros(4, 3, 3, 3), nn.GroupNorm(2, 4))
    with pytest.raises(ValueError, match='track_running_stats'):
        fusion.fuse_bn(torch.zeros(4, 3, 3, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match='4 output channels'):
        fusion.fuse_bn(torch.zeros(4, 3, 3, 3), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match='divisible'):
        fusion.identity_kernel(6, 4)


def test_half_precision_is_folded_in_float32():
    bn = nn.BatchNorm2d(4).half()
    randomize_bn_statistics(bn, 1)
    kernel, bias = fusion.fuse_bn(torch.randn(4, 3, 3, 3).half(), bn)
    assert kernel.dtype == bias.dtype == torch.float32
    assert fusion.fusion_dtype(torch.bfloat16) == torch.float32
    assert fusion.fusion_dtype(torch.float64) == torch.float64


def test_fuse_bn_is_differentiable():
    bn = nn.BatchNorm2d(4)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    kernel, bias = fusion.fuse_bn(w, bn)
    (kernel.sum() + bias.sum()).backward()
    assert w.grad is not None and bn.weight.grad is not None and bn.bias.grad is not None


def test_bn_scale_shift_is_the_inference_map():
    bn = random_bn(5, seed=2)
    y = torch.randn(3, 5, 4, 4, **F64)
    scale, shift = fusion.bn_scale_shift(bn)
    assert scale.shape == shift.shape == (5,)
    expected = bn(y)
    actual = y * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('dtype, atol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_shift_only_batchnorm_adds_the_bias_in_eval_mode(dtype, atol):
    norm = nn.BatchNorm2d(6, eps=1e-3).to(dtype)
    randomize_bn_statistics(norm, 5)
    bias = torch.randn(6, dtype=torch.float64)
    assert fusion.shift_only_batchnorm_(norm, bias) is norm
    assert norm.bias.dtype == dtype and norm.weight.requires_grad
    x = torch.randn(2, 6, 5, 5, dtype=dtype)
    with torch.no_grad():
        y = norm.eval()(x)
    assert torch.allclose(y, x + bias.to(dtype).reshape(1, -1, 1, 1), rtol=0, atol=atol)
    assert torch.equal(norm.running_mean, torch.zeros(6, dtype=dtype))
    assert torch.equal(norm.running_var, torch.ones(6, dtype=dtype))


def test_shift_only_batchnorm_makes_conv_plus_bn_the_fused_conv():
    """A fused ``(K, b)`` as a bias-free conv K followed by the shift-only BN."""
    x = torch.randn(2, 3, 7, 7, **F64)
    kernel, bias = torch.randn(4, 3, 3, 3, **F64), torch.randn(4, **F64)
    norm = fusion.shift_only_batchnorm_(nn.BatchNorm2d(4).double(), bias).eval()
    with torch.no_grad():
        y = norm(F.conv2d(x, kernel, padding=1))
    assert torch.allclose(y, F.conv2d(x, kernel, bias, padding=1), rtol=0, atol=1e-12)


def test_shift_only_batchnorm_errors_are_explicit():
    with pytest.raises(ValueError, match='affine parameters and running statistics'):
        fusion.shift_only_batchnorm_(nn.BatchNorm2d(4, affine=False), torch.zeros(4))
    with pytest.raises(ValueError, match='affine parameters and running statistics'):
        fusion.shift_only_batchnorm_(nn.BatchNorm2d(4, track_running_stats=False),
                                     torch.zeros(4))
    with pytest.raises(ValueError, match=r'shape \(4,\)'):
        fusion.shift_only_batchnorm_(nn.BatchNorm2d(4), torch.zeros(5))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_fuse_bn_statistics_equals_conv_then_batch_norm(dtype):
    """With explicit (mean, var): conv + bias + BN in training-style arithmetic equals the
    folded conv, in the inputs' dtype, with gradients reaching gamma / beta / the kernel."""
    x = torch.randn(2, 3, 6, 6, dtype=dtype)
    kernel = torch.randn(5, 3, 3, 3, dtype=dtype, requires_grad=True)
    bias, mean = torch.randn(5, dtype=dtype), torch.randn(5, dtype=dtype)
    var = torch.rand(5, dtype=dtype) + 0.1
    gamma = (torch.rand(5, dtype=dtype) + 0.5).requires_grad_()
    beta = torch.randn(5, dtype=dtype, requires_grad=True)
    expected = F.batch_norm(F.conv2d(x, kernel, bias, padding=1), mean, var, gamma, beta,
                            False, 0.0, 1e-3)
    fused_kernel, fused_bias = fusion.fuse_bn_statistics(kernel, bias, mean, var, gamma, beta,
                                                         1e-3)
    assert fused_kernel.dtype == dtype and fused_bias.dtype == dtype
    y = F.conv2d(x, fused_kernel, fused_bias, padding=1)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert float((y - expected).abs().max() / expected.abs().max()) <= tolerance
    y.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (kernel, gamma, beta))


def test_identity_batchnorm_keeps_the_function_and_holds_the_statistics():
    """Measured (mean, var) of a real activation: the BN stores them and is the identity."""
    x = torch.randn(4, 6, 5, 5, **F64) * torch.rand(1, 6, 1, 1, **F64) * 3 + 2
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3))
    norm = nn.BatchNorm2d(6, eps=1e-3).double()
    assert fusion.identity_batchnorm_(norm, mean, var) is norm
    with torch.no_grad():
        y = norm.eval()(x)
    assert torch.allclose(y, x, rtol=0, atol=1e-12)
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
    with pytest.raises(ValueError, match=r'var must have shape \(6,\)'):
        fusion.identity_batchnorm_(norm, mean, var[:5])


@pytest.mark.parametrize('groups', [1, 2])
def test_scale_output_channels_equals_scaling_the_conv_output(groups):
    x = torch.randn(2, 4, 6, 6, **F64)
    kernel = torch.randn(6, 4 // groups, 3, 3, **F64)
    scale = torch.randn(6, **F64)
    expected = F.conv2d(x, kernel, padding=1, groups=groups) * scale.reshape(1, -1, 1, 1)
    folded = fusion.scale_output_channels(kernel, scale)
    assert folded.shape == kernel.shape
    assert torch.allclose(F.conv2d(x, folded, padding=1, groups=groups), expected, rtol=0,
                          atol=1e-12)
    # any shape whose first dimension is the outputs (an FC weight)
    assert torch.equal(fusion.scale_output_channels(torch.ones(3, 2), torch.arange(3.)),
                       torch.arange(3.).reshape(3, 1).expand(3, 2))


@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('shared', [False, True])
def test_compose_1x1_depthwise_equals_the_two_convs(groups, shared):
    """1x1 (grouped, no bias) then one kxk filter per channel (or one for all), zero padding."""
    x = torch.randn(2, 4, 7, 6, **F64)
    first = torch.randn(6, 4 // groups, 1, 1, **F64)
    filters = torch.randn(3, 3, **F64) if shared else torch.randn(6, 3, 3, **F64)
    per_channel = filters.expand(6, 3, 3) if shared else filters
    expected = F.conv2d(F.conv2d(x, first, groups=groups), per_channel.unsqueeze(1), padding=1,
                        groups=6)
    kernel = fusion.compose_1x1_depthwise(first, filters)
    assert kernel.shape == (6, 4 // groups, 3, 3)
    assert torch.allclose(F.conv2d(x, kernel, padding=1, groups=groups), expected, rtol=0,
                          atol=1e-12)
    assert torch.equal(fusion.compose_1x1_depthwise(first, filters.reshape(-1, 1, 3, 3)), kernel)


def test_compose_1x1_depthwise_errors_are_explicit():
    with pytest.raises(ValueError, match='must be 1x1'):
        fusion.compose_1x1_depthwise(torch.zeros(4, 2, 3, 3), torch.zeros(4, 3, 3))
    with pytest.raises(ValueError, match='one 3x3 filter per output channel'):
        fusion.compose_1x1_depthwise(torch.zeros(4, 2, 1, 1), torch.zeros(3, 3, 3))


@pytest.mark.parametrize('groups', [1, 2])
def test_csla_kernel_equals_the_scaled_branches(groups):
    x = torch.randn(2, 4, 6, 6, **F64)
    w = torch.randn(4, 4 // groups, 3, 3, **F64)
    k1 = torch.randn(4, 4 // groups, 1, 1, **F64)
    s, s1, s_id = (torch.randn(4, **F64) for _ in range(3))

    def per_channel(values):
        return values.reshape(1, -1, 1, 1)

    expected = (per_channel(s) * F.conv2d(x, w, padding=1, groups=groups)
                + per_channel(s1) * F.conv2d(x, k1, groups=groups) + per_channel(s_id) * x)
    kernel = fusion.csla_kernel(w, s, k1, s1, s_id, groups=groups)
    assert kernel.shape == w.shape and kernel.dtype == w.dtype
    assert torch.allclose(F.conv2d(x, kernel, padding=1, groups=groups), expected, rtol=0,
                          atol=1e-12)
    # without the 1x1 and identity branches it is the scaled kernel alone
    assert torch.equal(fusion.csla_kernel(w, s), fusion.scale_output_channels(w, s))


def test_the_blocks_and_the_optimizer_share_csla_kernel():
    from rep_mm.blocks import csla
    from rep_mm.optim.repopt import handlers
    assert csla.csla_kernel is fusion.csla_kernel is handlers.csla_kernel


def test_fusion_has_one_export_list_of_existing_functions():
    assert len(fusion.__all__) == len(set(fusion.__all__))
    assert all(hasattr(fusion, name) for name in fusion.__all__)
    for name in fusion.__all__:
        value = getattr(fusion, name)
        if callable(value) and not isinstance(value, type) and name != 'KernelBias':
            assert value.__doc__, f'{name} has no docstring'
