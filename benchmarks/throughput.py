"""Throughput side by side: training-time vs converted vs a plain conv stack, and vs
mmpretrain's and timm's RepVGG at the same arch, all measured in one run.

For each model: eval-forward images/s of rep_mm's training-time model, of the converted model,
of an independently built plain ``nn.Sequential`` of Conv2d+ReLU with identical shapes (the
physical limit of a converted model; VGG-like models only), and for RepVGG archs of mmpretrain's
/ timm's RepVGG (training-time and reparameterized); plus a full training step (forward,
backward, SGD step) of every training-time implementation. Models: RepVGG archs by name
(``A0``, ``B0``, ``B1g2`` ...), ``RepOptVGG-B1`` (the target form that RepOptimizer trains: one
3x3 conv + BN per block), ``RepMLPNet-T224`` (vs its locality-injected form) and
``OREPA-ResNet18`` (``ReparamResNet`` with OREPA convs, vs its converted form and vs a plain
ResNet-18 of the same shapes, which is what the converted model is). Measurements are
interleaved round-robin and reported as medians of repeats with the thread count fixed. Writes
results/throughput.json and results/throughput.png.

    python benchmarks/throughput.py [--quick] [--threads N] [--size 224] [--batch 8]
                                    [--archs A0 B0 B1g2 RepOptVGG-B1 RepMLPNet-T224 OREPA-ResNet18]
"""
import copy
import sys
from pathlib import Path
from typing import Callable, Dict

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (benchmark_parser, median, median_seconds, save_figure,  # noqa: E402
                    save_results, subplots)

from rep_mm import reparameterize  # noqa: E402
from rep_mm.backbones import RepVGG  # noqa: E402
from rep_mm.verify.bn_statistics import randomize_bn_statistics  # noqa: E402

TIMM_NAMES = {'A0': 'repvgg_a0', 'A1': 'repvgg_a1', 'A2': 'repvgg_a2', 'B0': 'repvgg_b0',
              'B1': 'repvgg_b1', 'B1g4': 'repvgg_b1g4', 'B2': 'repvgg_b2', 'B2g4': 'repvgg_b2g4',
              'B3': 'repvgg_b3', 'B3g4': 'repvgg_b3g4', 'D2se': 'repvgg_d2se'}


class Classifier(nn.Module):
    """Backbone + global pooling + 1000-way linear layer (as every compared model has)."""

    def __init__(self, backbone: nn.Module, channels: int) -> None:
        super().__init__()
        self.backbone, self.fc = backbone, nn.Linear(channels, 1000)

    def forward(self, x):
        feats = self.backbone(x)
        feats = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.fc(feats.mean((2, 3)))


def plain_conv_stack(deployed: nn.Module) -> nn.Module:
    """An independent ``nn.Sequential`` of Conv2d+ReLU copying the deployed convs' shapes."""
    layers = []
    for module in deployed.modules():
        if isinstance(module, nn.Conv2d):
            layers += [nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                                 module.stride, module.padding, module.dilation, module.groups,
                                 bias=True), nn.ReLU(inplace=True)]
    channels = [m for m in layers if isinstance(m, nn.Conv2d)][-1].out_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1000))


def _pair(backbone: nn.Module) -> Dict[str, nn.Module]:
    """``rep_mm train-time`` (randomised BN statistics) and its ``rep_mm converted`` copy."""
    ours = randomize_bn_statistics(Classifier(backbone, backbone.out_channels[-1]), 0)
    deployed = copy.deepcopy(ours)
    reparameterize(deployed)
    return {'rep_mm train-time': ours, 'rep_mm converted': deployed}


def _repopt_vgg(name: str, quick: bool) -> Dict[str, nn.Module]:
    from rep_mm.backbones import RepOptVGG
    arch = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.5] * 4) if quick else name.split('-')[1]
    models = _pair(RepOptVGG(arch, mode='target'))
    models['plain conv stack'] = plain_conv_stack(models['rep_mm converted'])
    return models


def _repmlpnet(name: str, quick: bool) -> Dict[str, nn.Module]:
    from rep_mm.backbones import RepMLPNet
    arch = name.split('-')[1]
    if quick:  # T224's partitions on a 32x32 input: 8, 4, 2, 1
        arch = dict(RepMLPNet.arch_settings['T224'], channels=(16, 32, 64, 128),
                    hs=(8, 4, 2, 1), ws=(8, 4, 2, 1), num_blocks=(1, 1, 1, 1),
                    sharesets_nums=(1, 2, 4, 8))
    return _pair(RepMLPNet(arch, out_indices=(3,)))


def _orepa_resnet(name: str, quick: bool) -> Dict[str, nn.Module]:
    from rep_mm.backbones import ReparamResNet
    arch = dict(block='basic', stage_blocks=(1, 1, 1, 1)) if quick else 'resnet18'
    models = _pair(ReparamResNet(arch, conv_type='orepa', out_indices=(3,)))
    plain = ReparamResNet(arch, conv_type='base', out_indices=(3,))
    reparameterize(plain)  # conv + folded BN: exactly the converted model's operators
    models['plain ResNet (same shapes)'] = Classifier(plain, plain.out_channels[-1])
    return models


FAMILIES = {'RepOptVGG': _repopt_vgg, 'RepMLPNet': _repmlpnet, 'OREPA': _orepa_resnet}


def model_size(name: str, size: int, quick: bool) -> int:
    """Input side for a model: RepMLPNet-T224 needs 224 (its partitions tile 56/28/14/7)."""
    if name.startswith('RepMLPNet') and not quick:
        return int(name[-3:])
    return size


def candidates(arch: str, quick: bool = False) -> Dict[str, nn.Module]:
    family = arch.split('-')[0]
    if family in FAMILIES:
        return FAMILIES[family](arch, quick)
    ours = randomize_bn_statistics(Classifier(RepVGG(arch), RepVGG(arch).out_channels[-1]), 0)
    deployed = copy.deepcopy(ours)
    reparameterize(deployed)
    models = {'rep_mm train-time': ours, 'rep_mm converted': deployed,
              'plain conv stack': plain_conv_stack(deployed)}
    try:
        from mmpretrain.models import RepVGG as MMPretrainRepVGG
        mm = MMPretrainRepVGG(arch)
        models['mmpretrain train-time'] = randomize_bn_statistics(
            Classifier(mm, ours.fc.in_features), 0)
        mm_deployed = copy.deepcopy(models['mmpretrain train-time'])
        mm_deployed.backbone.switch_to_deploy()
        models['mmpretrain converted'] = mm_deployed
    except (ImportError, AssertionError, KeyError) as error:
        print(f'mmpretrain RepVGG-{arch} skipped: {error}')
    try:
        import timm
        from timm.utils.model import reparameterize_model
        if arch in TIMM_NAMES:
            timm_model = randomize_bn_statistics(timm.create_model(TIMM_NAMES[arch]), 0)
            models['timm train-time'] = timm_model
            models['timm converted'] = reparameterize_model(copy.deepcopy(timm_model))
    except ImportError as error:
        print(f'timm skipped: {error}')
    return models


def forward_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def run():
        with torch.no_grad():
            model(x)
    return run


def train_step_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.randint(0, 1000, (x.shape[0],))

    def run():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
    return run


def benchmark_arch(arch: str, size: int, batch: int, repeats: int, quick: bool = False) -> Dict:
    size = model_size(arch, size, quick)
    x = torch.randn(batch, 3, size, size)
    models = candidates(arch, quick)
    jobs = {f'forward/{name}': forward_fn(m, x) for name, m in models.items()}
    jobs.update({f'train_step/{name}': train_step_fn(m, x) for name, m in models.items()
                 if 'train-time' in name})
    timings = {name: [] for name in jobs}
    for name, job in jobs.items():  # warm up every job once
        median_seconds(job, repeats=0, warmup=1)
    for _ in range(repeats):  # round-robin, so drift hits every job alike
        for name, job in jobs.items():
            timings[name] += median_seconds(job, repeats=1, warmup=0)
    result = {name: dict(median_s=median(t), images_per_s=batch / median(t), runs=t)
              for name, t in timings.items()}
    ratios = {}
    fwd = {k.split('/', 1)[1]: v['median_s'] for k, v in result.items() if k.startswith('forward/')}
    step = {k.split('/', 1)[1]: v['median_s'] for k, v in result.items()
            if k.startswith('train_step/')}
    if 'plain conv stack' in fwd:
        ratios['converted / plain stack (time)'] = (fwd['rep_mm converted'] /
                                                    fwd['plain conv stack'])
    if 'plain ResNet (same shapes)' in fwd:
        ratios['converted / plain ResNet (time)'] = (fwd['rep_mm converted'] /
                                                     fwd['plain ResNet (same shapes)'])
    ratios['train-time / converted (time)'] = fwd['rep_mm train-time'] / fwd['rep_mm converted']
    others = [o for o in ('mmpretrain', 'timm') if f'{o} train-time' in fwd]
    for other in others:
        ratios[f'rep_mm / {other} train-time forward (time)'] = (
            fwd['rep_mm train-time'] / fwd[f'{other} train-time'])
        ratios[f'rep_mm / {other} train step (time)'] = (
            step['rep_mm train-time'] / step[f'{other} train-time'])
    if others:  # the bar: not slower than the faster of the two
        ratios['rep_mm / fastest other train-time forward (time)'] = (
            fwd['rep_mm train-time'] / min(fwd[f'{o} train-time'] for o in others))
        ratios['rep_mm / fastest other train step (time)'] = (
            step['rep_mm train-time'] / min(step[f'{o} train-time'] for o in others))
    return dict(arch=arch, model=arch if '-' in arch else f'RepVGG-{arch}', size=size,
                batch=batch, repeats=repeats, results=result, ratios=ratios)


def plot(rows, path: Path) -> None:
    fig, axes = subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        names = [n for n in row['results'] if n.startswith('forward/')]
        ax.barh([n.split('/', 1)[1] for n in names],
                [row['results'][n]['images_per_s'] for n in names], color='tab:blue')
        ax.set_title(f"{row['model']} eval forward ({row['size']}px, batch {row['batch']})",
                     fontsize=9)
        ax.set_xlabel('images / s (median)')
        ax.tick_params(axis='y', labelsize=7)
    save_figure(fig, path)


def main(argv=None):
    parser = benchmark_parser(__doc__, 'tiny sizes (for tests)')
    parser.add_argument('--archs', nargs='+', default=['A0', 'B0', 'B1g2', 'RepOptVGG-B1',
                                                       'RepMLPNet-T224', 'OREPA-ResNet18'])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if args.quick:
        # RepVGG-A0 as is, the other families as tiny archs of the same structure
        args.archs, args.size, args.batch, args.repeats = (
            ['A0', 'RepOptVGG-B1', 'RepMLPNet-T224', 'OREPA-ResNet18'], 32, 2, 2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for arch in args.archs:
        rows.append(benchmark_arch(arch, args.size, args.batch, args.repeats, args.quick))
        for name, value in rows[-1]['ratios'].items():
            print(f"{rows[-1]['model']}: {name} = {value:.3f}", flush=True)
    save_results('throughput', args.quick, dict(threads=args.threads, quick=args.quick, rows=rows),
                 args.out_dir, plot, rows)
    return rows


if __name__ == '__main__':
    main()
