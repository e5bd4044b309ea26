"""Shared builders of the RepOptimizer tests: golden models and one training loop."""
import torch
from torch.nn import functional as F

from rep_mm.backbones import RepOptGhostNet, RepOptVGG

from ..conftest import load_golden


def golden_vgg(mode='target'):
    golden = load_golden('repopt_vgg_trajectory')
    kwargs = golden['builder']['target']['kwargs']
    arch = dict(num_blocks=kwargs['num_blocks'], width_factor=kwargs['width_multiplier'])
    return golden, RepOptVGG(arch, mode=mode, num_classes=10)


def golden_ghost(mode='target'):
    golden = load_golden('repopt_ghost')
    kwargs = golden['builder']['target']['kwargs']
    arch = dict(width=kwargs['width'], cfgs=kwargs['cfgs'])
    return golden, RepOptGhostNet(arch, mode=mode, num_classes=10, dropout=0.0)


def train_steps(model, optimizer, data, labels, steps):
    """``steps`` SGD/AdamW steps on one fixed batch (model in train mode); the losses."""
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(data), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def max_state_rel_diff(reference, state_dict):
    """Per tensor ``max|a-b| / max(max|a|, 1e-3)`` (the golden README's measure); the worst."""
    worst = (0.0, None)
    for key, ref in reference.items():
        if ref.is_floating_point():
            a, b = ref.double(), state_dict[key].double()
            diff = ((a - b).abs().max() / max(a.abs().max().item(), 1e-3)).item()
            worst = max(worst, (diff, key), key=lambda t: t[0])
    return worst


def uniform_(tensor, low, high, generator):
    with torch.no_grad():
        tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
                     * (high - low) + low)
    return tensor
