"""GR = CSLA: RepOptSGD / RepOptAdamW on the target model == plain SGD / AdamW on the CSLA model.

The CSLA model has the target's BN / head parameters, its conv kernels ``W`` and 1x1 kernels
``K1`` and constant scales; the target starts at the folded kernel
``W' = s_conv W + pad(s_1x1 K1) + s_id I`` (the rule of initialisation). After K steps on the
same batches, the CSLA model folded (``conv_kernel()``) must equal the target's kernels, and
every other parameter / buffer must be equal. The identity scale of the CSLA form is trainable
and decayed like the kernels: the official mult's ``+1`` on the identity centre is exactly its
contribution. Float32: relative <= 1e-5; float64: <= 1e-10 (exact in exact arithmetic).

AdamW is invariant to the gradient scale only up to ``eps`` (``m / (sqrt(v) + eps)``), so its
checks use ``eps`` far below ``sqrt(v)`` (1e-12 in float32, 1e-30 in float64); with the usual
1e-8 the VGG case here differs by 1.1e-5, all of it from ``eps``. AdamW also turns rounding
noise into lr-sized steps for parameters whose true gradient is zero (in GhostNet, BN biases
whose constant shift a later train-mode BN removes): those carry no learning signal and are
frozen in both models for the AdamW checks (found by a float64 gradient, listed by the test).
Scales are positive (U(0.2, 1.2)): the official AdamW rule equals CSLA only where the branch
scales share a sign (it applies ``|sum s|`` where CSLA applies ``sum |s|``).
"""
import copy

import pytest
import torch
from torch.nn import functional as F

from rep_mm.backbones import RepOptGhostNet, RepOptVGG
from rep_mm.blocks import RepOptGhostModule, RepOptVGGBlock
from rep_mm.optim import (RepOptAdamW, RepOptSGD, build_handler, official_param_groups)
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from .helpers import uniform_

VGG_ARCH = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.125, 0.125, 0.0625, 0.0625))
GHOST_ARCH = dict(width=1.0, cfgs=[[[3, 8, 8, 0, 1]], [[3, 16, 8, 0.25, 2]], [[3, 8, 8, 0, 1]]])
STEPS = 5
SGD = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
ADAMW_EPS = {torch.float32: 1e-12, torch.float64: 1e-30}


def build_pair(kind, dtype):
    """A CSLA model with random scales and the target model re-initialised from it."""
    gen = torch.Generator().manual_seed(7)
    if kind == 'vgg':
        csla = RepOptVGG(VGG_ARCH, mode='csla', num_classes=10)
        target = RepOptVGG(VGG_ARCH, mode='target', num_classes=10)
    else:
        csla = RepOptGhostNet(GHOST_ARCH, mode='csla', num_classes=10, dropout=0.0,
                              head_channels=32)
        target = RepOptGhostNet(GHOST_ARCH, mode='target', num_classes=10, dropout=0.0,
                                head_channels=32)
    csla, target = csla.to(dtype), target.to(dtype)
    randomize_bn_statistics(csla, seed=3)
    scales = {}
    for name, tensor in list(csla.named_parameters()) + list(csla.named_buffers()):
        if '.scale_' in name or 'fusion_scale' in name or name.endswith('cheap_operation.1.weight'):
            scales[name] = uniform_(tensor, 0.2, 1.2, gen).detach().clone()
    shared = {k: v for k, v in csla.state_dict().items() if k in target.state_dict()}
    target.load_state_dict(shared, strict=True)
    handler = build_handler(target, scales)
    kernels_1x1 = {k.replace('conv_1x1', 'conv'): v for k, v in csla.state_dict().items()
                   if 'conv_1x1' in k}
    handler.reinitialize(kernels_1x1=kernels_1x1 or None)
    return csla, target, handler


def csla_groups(model):
    """Kernels, the identity scale and the FC weight decay; BN, biases do not."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim > 1 or 'scale_identity' in name or 'fusion_scale' in name:
            decay.append(param)
        else:
            no_decay.append(param)
    return [dict(params=decay), dict(params=no_decay, weight_decay=0.0)]


def batches(dtype):
    gen = torch.Generator().manual_seed(11)
    for _ in range(STEPS):
        yield (torch.randn(8, 3, 32, 32, generator=gen).to(dtype),
               torch.randint(0, 10, (8,), generator=gen))


def freeze_no_signal_parameters(*models):
    """Freeze (in every model) the parameters whose float64 gradient on the first batch is 0."""
    probe = copy.deepcopy(models[0]).double().train()
    data, labels = next(batches(torch.float64))
    F.cross_entropy(probe(data), labels).backward()
    frozen = [n for n, p in probe.named_parameters() if p.grad.abs().max() <= 1e-13]
    for model in models:
        params = dict(model.named_parameters())
        for name in frozen:
            if name in params:
                params[name].requires_grad_(False)
    return frozen


def run(model, optimizer, dtype):
    model.train()
    for data, labels in batches(dtype):
        loss = F.cross_entropy(model(data), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def folded_difference(csla, target):
    """Worst ``(max|a-b| / max|a|, name)`` over the folded kernels and all shared tensors."""
    worst = (0.0, "")
    blocks = (RepOptVGGBlock, RepOptGhostModule)
    target_modules = dict(target.named_modules())
    for name, block in csla.named_modules():
        if isinstance(block, blocks):
            kernel = target_modules[name].conv.weight if isinstance(block, RepOptVGGBlock) \
                else target_modules[name].cheap_operation[0].weight
            a, b = kernel.detach().double(), block.conv_kernel().detach().double()
            worst = max(worst, (((a - b).abs().max() / a.abs().max()).item(), name))
    target_state = target.state_dict()
    for key, value in csla.state_dict().items():
        if key in target_state and value.is_floating_point() and '.conv.' not in key \
                and 'cheap_operation.0' not in key:
            a, b = target_state[key].double(), value.double()
            worst = max(worst, (((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item(),
                                key))
    return worst


@pytest.mark.parametrize('kind', ['vgg', 'ghost'])
@pytest.mark.parametrize('rule', ['sgd', 'adamw'])
@pytest.mark.parametrize('dtype,tolerance', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_gradient_reparam_equals_csla_training(kind, rule, dtype, tolerance):
    csla, target, handler = build_pair(kind, dtype)
    assert folded_difference(csla, target)[0] <= (1e-6 if dtype == torch.float32 else 1e-14)
    if rule == 'sgd':
        plain = torch.optim.SGD(csla_groups(csla), **SGD)
        repopt = RepOptSGD(official_param_groups(target, SGD['weight_decay']),
                           grad_mult_map=handler.grad_mults('sgd'), **SGD)
    else:
        frozen = freeze_no_signal_parameters(csla, target)
        assert all('bias' in name for name in frozen)
        assert (len(frozen) > 0) == (kind == 'ghost'), frozen
        kwargs = dict(ADAMW, eps=ADAMW_EPS[dtype])
        plain = torch.optim.AdamW(csla_groups(csla), **kwargs)
        repopt = RepOptAdamW(official_param_groups(target, kwargs['weight_decay']),
                             grad_mult_map=handler.grad_mults('adamw'), **kwargs)
    run(csla, plain, dtype)
    run(target, repopt, dtype)
    error, where = folded_difference(csla, target)
    assert error <= tolerance, where
