"""Conversion of float16 / bfloat16 models: error against the float64 reference, per family.

For each family (RepVGG, RepMLPNet, ResNet with DBB, ResNet with OREPA, ResNet with ACB) a
model with randomised BatchNorm statistics is built in float32, then

* ``reference``: the training-form model in float64 (the exact function);
* for ``dtype`` in float32 / float16 / bfloat16, a copy cast to ``dtype`` is run in training
  form (``train``) and after ``rep_mm.reparameterize`` (``deploy``). Reported, as
  ``max |a - b| / max |a|`` over the output (:func:`rep_mm.reparam.max_errors`):
  ``train_vs_ref`` (what running in ``dtype`` costs anyway), ``deploy_vs_ref`` (what a user of
  the converted half model gets) and ``deploy_vs_train`` (what the conversion adds on top);
* ``fp32_fold_then_cast``: the fused kernels of the ``dtype`` model equal, bit for bit, the
  kernels obtained by folding an exact float32 copy of it and casting back to ``dtype``
  (``rep_mm.fusion.fusion_dtype``: fp16/bf16 are folded in float32);
* ``kernel_vs_fp64``: the largest relative error of a fused kernel against the same fold done
  in float64 (half-precision rounding of the result: ~2^-11 for fp16, ~2^-8 for bf16).

Usage::

    python benchmarks/mixed_precision.py [--quick] [--out-dir DIR]

Writes ``mixed_precision[_quick].json`` and ``.png`` to ``benchmarks/results`` (or DIR).
"""
import copy
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import benchmark_parser, save_figure, save_results, subplots  # noqa: E402

from rep_mm.backbones import RepMLPNet, RepVGG, ReparamResNet  # noqa: E402
from rep_mm.reparam import ReparamBlock, max_errors, reparameterize  # noqa: E402
from rep_mm.verify.bn_statistics import randomize_bn_statistics  # noqa: E402

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
TINY_MLP = dict(channels=(16, 32, 64, 128), hs=(8, 4, 2, 1), ws=(8, 4, 2, 1),
                num_blocks=(1, 1, 1, 1), sharesets_nums=(1, 4, 8, 16), reparam_conv_k=(1, 3))
TINY_RESNET = dict(block='basic', stage_blocks=(1, 1, 1, 1), width=0.25, groups=1,
                   width_per_group=64)


def families(quick: bool) -> List[Tuple[str, Callable[[], nn.Module], Tuple[int, ...]]]:
    """``(name, builder, input shape)``: tiny archs in quick mode, real ones otherwise."""
    if quick:
        return [
            ('RepVGG', lambda: RepVGG(dict(num_blocks=[1, 1, 1, 1],
                                           width_factor=[0.25] * 4)), (2, 3, 32, 32)),
            ('RepMLPNet', lambda: RepMLPNet(TINY_MLP), (2, 3, 32, 32)),
            ('ResNet-DBB', lambda: ReparamResNet(TINY_RESNET, conv_type='dbb',
                                                 stem_channels=16), (2, 3, 32, 32)),
            ('ResNet-OREPA', lambda: ReparamResNet(TINY_RESNET, conv_type='orepa',
                                                   stem_channels=16), (2, 3, 32, 32)),
        ]
    return [
        ('RepVGG', lambda: RepVGG('A0'), (2, 3, 224, 224)),
        ('RepMLPNet', lambda: RepMLPNet('T224'), (2, 3, 224, 224)),
        ('ResNet-DBB', lambda: ReparamResNet('resnet18', conv_type='dbb'), (2, 3, 224, 224)),
        ('ResNet-OREPA', lambda: ReparamResNet('resnet18', conv_type='orepa'),
         (2, 3, 224, 224)),
        ('ResNet-ACB', lambda: ReparamResNet('resnet18', conv_type='acb'), (2, 3, 224, 224)),
    ]


def _output(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out = model(x)
    return out[-1] if isinstance(out, (tuple, list)) else out


def _fused_kernels(model: nn.Module) -> Dict[str, Tensor]:
    """Every tensor of the converted model's fused operators (name -> tensor)."""
    names = {name for name, m in model.named_modules() if isinstance(m, ReparamBlock)}
    return {k: v for k, v in model.state_dict().items()
            if v.is_floating_point() and any(k.startswith(n + '.') for n in names)}


def _rel(a: Tensor, b: Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return ((a64 - b64).abs().max() / a64.abs().max().clamp_min(1e-30)).item()


def measure(build: Callable[[], nn.Module], shape: Tuple[int, ...], seed: int = 0) -> Dict:
    torch.manual_seed(seed)
    base = randomize_bn_statistics(build(), seed=seed).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    reference = _output(copy.deepcopy(base).double(), x.double())
    rows: Dict[str, Dict] = {}
    for name, dtype in DTYPES.items():
        model = copy.deepcopy(base).to(dtype)
        exact_fp32 = copy.deepcopy(model).float()  # the same (rounded) weights, in float32
        exact_fp64 = copy.deepcopy(model).double()
        train = _output(model, x.to(dtype)).float()
        report = reparameterize(model)
        deploy = _output(model, x.to(dtype)).float()
        reparameterize(exact_fp32)
        reparameterize(exact_fp64)
        kernels = _fused_kernels(model)
        fp32_kernels = _fused_kernels(exact_fp32)
        fp64_kernels = _fused_kernels(exact_fp64)
        rows[name] = dict(
            blocks=len(report.converted),
            train_vs_ref=max_errors(reference, train)[1],
            deploy_vs_ref=max_errors(reference, deploy)[1],
            deploy_vs_train=max_errors(train, deploy)[1],
            fp32_fold_then_cast=all(torch.equal(v, fp32_kernels[k].to(dtype))
                                    for k, v in kernels.items()),
            kernel_vs_fp64=max(_rel(fp64_kernels[k], v) for k, v in kernels.items()),
            dtype_kept=all(p.dtype == dtype for p in model.parameters()),
        )
    return rows


def plot(results: Dict[str, Dict], path: Path) -> None:
    names = list(results)
    bars = [(f'{dtype} {what}', dtype, what) for dtype in ('float16', 'bfloat16')
            for what in ('train_vs_ref', 'deploy_vs_ref')] + [
        ('float32 deploy_vs_ref', 'float32', 'deploy_vs_ref')]
    width = 0.8 / len(bars)
    fig, ax = subplots(figsize=(11, 4.5))
    for i, (label, dtype, what) in enumerate(bars):
        values = [max(results[n][dtype][what], 1e-12) for n in names]
        ax.bar([j + i * width for j in range(len(names))], values, width, label=label)
    ax.set_yscale('log')
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylabel('max |a - b| / max |a| vs float64 training form')
    ax.set_title('Conversion in mixed precision: the converted model is as accurate as the '
                 'training form', fontsize=9)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = benchmark_parser(__doc__, 'tiny archs (seconds)')
    args = parser.parse_args(argv)
    results = {}
    for name, build, shape in families(args.quick):
        results[name] = measure(build, shape)
        for dtype, row in results[name].items():
            print(f'{name:13s} {dtype:9s} train/ref {row["train_vs_ref"]:.2e}  deploy/ref '
                  f'{row["deploy_vs_ref"]:.2e}  deploy/train {row["deploy_vs_train"]:.2e}  '
                  f'kernel/fp64 {row["kernel_vs_fp64"]:.2e}  '
                  f'fp32-fold {row["fp32_fold_then_cast"]}')
    payload = dict(quick=args.quick, input_shapes={n: list(s) for n, _, s in
                                                   families(args.quick)}, results=results)
    save_results('mixed_precision', args.quick, payload, args.out_dir, plot, results)
    return payload


if __name__ == '__main__':
    main()
