"""Models the deployment benchmarks measure, by name, as classifiers with randomised BN stats.

Names: ``RepVGG-<arch>``, ``RepVGGplus-<arch>``, ``RepOptVGG-<arch>`` (target form),
``RepMLPNet-<arch>``, ``OREPA-ResNet18`` / ``DBB-ResNet18`` / ``ACB-ResNet18`` (and ``-ResNet50``)
(``ReparamResNet`` with that conv type). ``quick=True`` gives a tiny arch of the same family
(for the test suite) that runs on a 32x32 input.
"""
from typing import List, Tuple

import torch
from torch import nn

from rep_mm.verify.bn_statistics import randomize_bn_statistics

QUICK_REPVGG = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.5])
QUICK_REPMLP = dict(channels=(16, 32, 64, 128), hs=(8, 4, 2, 1), ws=(8, 4, 2, 1),
                    num_blocks=(1, 1, 1, 1), sharesets_nums=(1, 2, 4, 8))
QUICK_RESNET = dict(block='basic', stage_blocks=(1, 1, 1, 1))
RESNET_ARCHS = {'ResNet18': 'resnet18', 'ResNet50': 'resnet50'}


class Classifier(nn.Module):
    """Backbone + global average pooling + 1000-way linear layer."""

    def __init__(self, backbone: nn.Module, num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        feats = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.fc(feats.mean((2, 3)))


def build_backbone(name: str, quick: bool = False) -> nn.Module:
    """A training-form rep_mm backbone (last stage only) by benchmark name."""
    from rep_mm.backbones import ReparamResNet, RepMLPNet, RepOptVGG, RepVGG, RepVGGplus
    family, _, arch = name.partition('-')
    if family == 'RepVGG':
        return RepVGG(QUICK_REPVGG if quick else arch, out_indices=(3,))
    if family == 'RepVGGplus':
        return RepVGGplus(QUICK_REPVGG if quick else arch, out_indices=(3,))
    if family == 'RepOptVGG':
        return RepOptVGG(QUICK_REPVGG if quick else arch, mode='target', out_indices=(3,))
    if family == 'RepMLPNet':
        spec = dict(RepMLPNet.arch_settings['T224'], **QUICK_REPMLP) if quick else arch
        return RepMLPNet(spec, out_indices=(3,))
    if family in ('OREPA', 'DBB', 'ACB') and arch in RESNET_ARCHS:
        spec = QUICK_RESNET if quick else RESNET_ARCHS[arch]
        return ReparamResNet(spec, conv_type=family.lower(), out_indices=(3,))
    raise ValueError(f'unknown benchmark model {name!r}; use RepVGG-<arch>, RepVGGplus-<arch>, '
                     f'RepOptVGG-<arch>, RepMLPNet-<arch> or OREPA|DBB|ACB-ResNet18|ResNet50')


def build_model(name: str, quick: bool = False, seed: int = 0) -> nn.Module:
    """Training-form classifier in eval mode, BN statistics randomised with ``seed``."""
    torch.manual_seed(seed)
    return randomize_bn_statistics(Classifier(build_backbone(name, quick)), seed).eval()


def input_size(name: str, model: nn.Module, size: int) -> int:
    """``size``, or the smallest multiple of a RepMLPNet's partition grid that is >= ``size``."""
    backbone = model.backbone
    if hasattr(backbone, 'input_size_multiple'):
        multiple = backbone.input_size_multiple()[0]
        return max(multiple, (size + multiple - 1) // multiple * multiple)
    return size


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def all_names() -> List[Tuple[str, str]]:
    """``(family, name)`` of every arch conversion_time measures in full mode."""
    from rep_mm.backbones import RepMLPNet, RepVGG, RepVGGplus
    names = [('RepVGG', f'RepVGG-{a}') for a in RepVGG.arch_settings]
    names += [('RepVGGplus', f'RepVGGplus-{a}') for a in RepVGGplus.arch_settings]
    names += [('RepMLPNet', f'RepMLPNet-{a}') for a in RepMLPNet.arch_settings]
    names += [('ReparamResNet', f'{c}-{r}') for c in ('ACB', 'DBB', 'OREPA')
              for r in RESNET_ARCHS]
    return names
