"""Model zoo table: parameters and exactness of conversion for every arch rep_mm ships.

For each arch: training-time and deploy parameters (backbone + a 1000-class linear layer, as
the papers count), max abs / relative error of the converted model against the training-time
model with randomised BatchNorm statistics in float32 and float64, and conversion time.
Writes results/model_zoo.json, results/model_zoo.md (the README table) and results/model_zoo.png.

    python benchmarks/model_zoo.py [--quick]
"""
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_parser, save_figure, subplots, write_json  # noqa: E402

from rep_mm import reparameterize  # noqa: E402
from rep_mm.backbones import (OREPARepVGG, RepGhostNet, RepMLPNet, RepOptGhostNet,  # noqa: E402
                              RepOptVGG, RepVGG, RepVGGplus, ReparamResNet)
from rep_mm.verify.bn_statistics import randomize_bn_statistics  # noqa: E402


def _builder(cls, arch, **kwargs):
    return lambda: cls(arch, **kwargs)


def zoo(quick: bool):
    """``(family, arch label, builder, input size or None)`` of every shipped arch."""
    entries = [('RepVGG', a, _builder(RepVGG, a), 32) for a in RepVGG.arch_settings]
    entries += [('RepVGGplus', a, _builder(RepVGGplus, a), 32) for a in RepVGGplus.arch_settings]
    entries += [('RepMLPNet', a, _builder(RepMLPNet, a), None) for a in RepMLPNet.arch_settings]
    entries += [('OREPA-RepVGG', a, _builder(OREPARepVGG, a), 32)
                for a in OREPARepVGG.arch_settings]
    entries += [('RepOpt-VGG', f'{a} (target)', _builder(RepOptVGG, a, mode='target'), 32)
                for a in RepOptVGG.arch_settings]
    entries += [('RepOpt-VGG', f'{a} (hs)', _builder(RepOptVGG, a, mode='hs'), 32)
                for a in ('B1', )]
    entries += [('RepGhostNet', '0.5x', _builder(RepGhostNet, '0.5x'), 32),
                ('RepOpt-GhostNet', '0.5x (target)', _builder(RepOptGhostNet, '0.5x'), 32),
                ('RepOpt-GhostNet', '0.5x (hs)', _builder(RepOptGhostNet, '0.5x', mode='hs'), 32)]
    entries += [(f'{conv.upper()}-ResNet', depth.replace('resnet', 'R'),
                 _builder(ReparamResNet, depth, conv_type=conv, out_indices=(3, )), 32)
                for conv in ('acb', 'dbb', 'orepa') for depth in ('resnet18', 'resnet50')]
    if quick:
        entries = [e for e in entries if e[1] in ('A0', 'T224', '0.5x')]
    return entries


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(family, arch, build, size):
    model = randomize_bn_statistics(build(), seed=0).eval()
    width = model.out_channels[-1]
    head_params = width * 1000 + 1000
    if size is None:
        size = model.input_size_multiple()[0]
    x = torch.randn(1, 3, size, size)
    row = dict(family=family, arch=arch, input=size,
               train_params_m=(count(model) + head_params) / 1e6)
    for dtype, name in ((torch.float32, 'fp32'), (torch.float64, 'fp64')):
        candidate = copy.deepcopy(model).to(dtype)
        start = time.perf_counter()
        report = reparameterize(candidate, verify=x.to(dtype))
        row[f'{name}_max_abs'] = report.max_abs_error
        row[f'{name}_max_rel'] = report.max_rel_error
        row[f'{name}_pass'] = bool(report.passed)
        if dtype == torch.float32:
            row['convert_seconds'] = time.perf_counter() - start
            row['deploy_params_m'] = (count(candidate) + head_params) / 1e6
            row['blocks'] = len(report.converted)
        del candidate
    return row


def markdown(rows) -> str:
    lines = ['| model | train params (M) | deploy params (M) | fp32 max rel err | '
             'fp64 max rel err | blocks |', '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['family']}-{r['arch']} | {r['train_params_m']:.2f} | "
                     f"{r['deploy_params_m']:.2f} | {r['fp32_max_rel']:.1e} | "
                     f"{r['fp64_max_rel']:.1e} | {r['blocks']} |")
    return '\n'.join(lines) + '\n'


def plot(rows, path: Path) -> None:
    names = [f"{r['family']}-{r['arch']}" for r in rows]
    fig, ax = subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    ax.bar(range(len(rows)), [r['fp32_max_rel'] for r in rows], label='float32')
    ax.bar(range(len(rows)), [max(r['fp64_max_rel'], 1e-18) for r in rows], label='float64')
    ax.axhline(1e-5, color='tab:red', ls='--', lw=1, label='fp32 budget 1e-5')
    ax.axhline(1e-10, color='tab:purple', ls=':', lw=1, label='fp64 budget 1e-10')
    ax.set_yscale('log')
    ax.set_xticks(range(len(rows)), names, rotation=60, ha='right', fontsize=7)
    ax.set_ylabel('max |train - deploy| / max |train|')
    ax.set_title('Conversion error with randomised BN statistics')
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None):
    parser = benchmark_parser(__doc__, 'four small archs only (for tests)')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for family, arch, build, size in zoo(args.quick):
        rows.append(measure(family, arch, build, size))
        print(f"{family}-{arch}: fp32 rel {rows[-1]['fp32_max_rel']:.2e}, "
              f"fp64 rel {rows[-1]['fp64_max_rel']:.2e}", flush=True)
    name = 'model_zoo_quick' if args.quick else 'model_zoo'
    write_json(name, dict(rows=rows), args.out_dir)
    (args.out_dir / f'{name}.md').write_text(markdown(rows))
    plot(rows, args.out_dir / f'{name}.png')
    return rows


if __name__ == '__main__':
    main()
