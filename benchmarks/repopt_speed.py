"""RepOptimizer speed, side by side in one run: the optimizer step, and a full training step.

(a) ``optimizer.step()`` on RepOpt-VGG-B1's parameters (official parameter groups: no weight
    decay on BN / biases): ``RepOptSGD`` vs ``torch.optim.SGD`` (foreach) and ``RepOptAdamW``
    vs ``torch.optim.AdamW`` (foreach), with the same fixed gradients restored (untimed) before
    every timed step. Target: RepOpt / torch <= 1.2.
(b) a training step (forward, cross-entropy backward, step) at batch 16, 64 px:
    RepOpt-VGG-B1 (target form) + RepOptSGD vs RepVGG-B1's training-time structure (3x3 +
    1x1 + identity branches, each with BN) + SGD; RepOpt-VGG-B1 + torch SGD is the floor (a plain
    VGG with no multipliers). Target: RepOpt-VGG / RepVGG <= 0.85.

Jobs are interleaved round-robin (drift hits all alike); medians are reported with every run,
the thread count is fixed (``--threads``) and written with the machine description. Writes
``results/repopt_speed[_quick].json`` and ``.png``.

    python benchmarks/repopt_speed.py [--quick] [--threads N] [--repeats R] [--scales FILE]

``--quick`` uses a tiny arch, 32 px, batch 4 and 2 repeats (a smoke test, not a measurement).
"""
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_parser, median, save_figure, save_results, subplots  # noqa: E402

from rep_mm.backbones import RepOptVGG, RepVGG  # noqa: E402
from rep_mm.optim import RepOptAdamW, RepOptSGD, build_handler, official_param_groups  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / 'tests' / 'data' / 'reference' / 'repopt_scales'
DEFAULT_SCALES = REFERENCE / 'RepOpt-VGG-B1-scales.pth'
QUICK_ARCH = dict(num_blocks=(1, 2, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25))
TARGETS = {'optimizer_step': 1.2, 'train_step': 0.85}
SGD_CFG = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
ADAMW_CFG = dict(lr=1e-3, weight_decay=0.05)


class RepVGGClassifier(nn.Module):
    """RepVGG backbone (training-time structure) + global pooling + ``linear``, the layout of
    ``RepOptVGG(num_classes=...)``."""

    def __init__(self, arch, num_classes: int) -> None:
        super().__init__()
        self.backbone = RepVGG(arch)
        self.linear = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.backbone(x)[-1].mean((2, 3)))


def scales_for(model: RepOptVGG, path: Optional[Path]) -> Dict:
    """The released scales when they fit, else random ones of the right shapes (the timing of a
    step does not depend on the values). Returns ``dict(scales=..., source=...)``."""
    if path is not None and path.is_file():
        return dict(scales=str(path), source=str(path))
    hs = RepOptVGG(model.arch, mode='hs')
    gen = torch.Generator().manual_seed(0)
    scales = {k: torch.rand(v.shape, generator=gen) + 0.5
              for k, v in hs.state_dict().items() if '.scale_' in k}
    return dict(scales=scales, source='random (released file not found)')


def step_job(optimizer: torch.optim.Optimizer, params: List[nn.Parameter],
             grads: List[Tensor]) -> Callable[[], float]:
    """A timed ``optimizer.step()``; the gradients are restored (untimed) first, since
    RepOpt optimizers multiply ``p.grad`` in place."""
    def run() -> float:
        with torch.no_grad():
            torch._foreach_copy_([p.grad for p in params], grads)
        start = time.perf_counter()
        optimizer.step()
        return time.perf_counter() - start
    return run


def optimizer_jobs(arch, scales: Dict) -> Dict[str, Callable[[], float]]:
    """Four optimizers, each on its own copy of the model with identical fixed gradients."""
    jobs = {}
    gen = torch.Generator().manual_seed(1)
    grads = None
    for name, cls, cfg, rule in (('RepOptSGD', RepOptSGD, SGD_CFG, 'sgd'),
                                 ('torch SGD', torch.optim.SGD, SGD_CFG, None),
                                 ('RepOptAdamW', RepOptAdamW, ADAMW_CFG, 'adamw'),
                                 ('torch AdamW', torch.optim.AdamW, ADAMW_CFG, None)):
        torch.manual_seed(0)
        model = RepOptVGG(arch, num_classes=1000)
        params = [p for p in model.parameters()]
        if grads is None:
            grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        groups = official_param_groups(model, cfg['weight_decay'])
        if rule is None:
            optimizer = cls(groups, foreach=True, **cfg)
        else:
            mults = build_handler(model, scales['scales']).grad_mults(rule)
            optimizer = cls(groups, grad_mult_map=mults, foreach=True, **cfg)
        jobs[name] = step_job(optimizer, params, grads)
    return jobs


def train_job(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
              target: Tensor) -> Callable[[], float]:
    model.train()

    def run() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
        return time.perf_counter() - start
    return run


def train_jobs(arch, scales: Dict, batch: int, size: int) -> Dict[str, Callable[[], float]]:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, size, size, generator=gen)
    target = torch.randint(0, 1000, (batch,), generator=gen)
    torch.manual_seed(0)
    repopt = RepOptVGG(arch, num_classes=1000)
    handler = build_handler(repopt, scales['scales'])
    handler.reinitialize()
    repopt_sgd = RepOptSGD(official_param_groups(repopt, SGD_CFG['weight_decay']),
                           grad_mult_map=handler.grad_mults('sgd'), foreach=True, **SGD_CFG)
    torch.manual_seed(0)
    plain = RepOptVGG(arch, num_classes=1000)
    plain_sgd = torch.optim.SGD(official_param_groups(plain, SGD_CFG['weight_decay']),
                                foreach=True, **SGD_CFG)
    torch.manual_seed(0)
    repvgg = RepVGGClassifier(arch, 1000)
    repvgg_sgd = torch.optim.SGD(official_param_groups(repvgg, SGD_CFG['weight_decay']),
                                 foreach=True, **SGD_CFG)
    return {'RepOpt-VGG + RepOptSGD': train_job(repopt, repopt_sgd, x, target),
            'RepVGG train-time + SGD': train_job(repvgg, repvgg_sgd, x, target),
            'RepOpt-VGG + torch SGD (floor)': train_job(plain, plain_sgd, x, target)}


def round_robin(jobs: Dict[str, Callable[[], float]], repeats: int, warmup: int) -> Dict:
    for job in jobs.values():
        for _ in range(warmup):
            job()
    runs = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            runs[name].append(job())
    return {name: dict(median_s=median(t), runs_s=t) for name, t in runs.items()}


def plot(payload: Dict, path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(12, 4))
    for ax, key, title in ((axes[0], 'optimizer_step', 'optimizer.step()'),
                           (axes[1], 'train_step', 'training step (fwd + bwd + step)')):
        rows = payload[key]
        names = list(rows)
        values = [rows[n]['median_s'] * 1e3 for n in names]
        colors = ['tab:orange' if n.startswith('RepOpt') and 'floor' not in n else 'tab:gray'
                  for n in names]
        ax.barh(names, values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, f' {v:.1f}', va='center', fontsize=8)
        ax.set_xlabel('median ms')
        ratios = '\n'.join(f"{k.split(' ', 1)[1]}: {v:.2f}x (target <= {TARGETS[key]})"
                           if 'floor' not in k else f"{k.split(' ', 1)[1]}: {v:.2f}x"
                           for k, v in payload['ratios'].items() if k.startswith(key))
        ax.set_title(f'{title}\n{ratios}', fontsize=8)
        ax.tick_params(axis='y', labelsize=8)
    fig.suptitle(f"{payload['model']}  batch {payload['batch']}, {payload['size']} px, "
                 f"{payload['threads']} thread(s)", fontsize=9)
    save_figure(fig, path, dpi=110)


def main(argv=None) -> Dict:
    parser = benchmark_parser(__doc__, 'tiny smoke run')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: OMP_NUM_THREADS, else all cores)')
    parser.add_argument('--repeats', type=int, default=None, help='timed runs per job')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--scales', type=Path, default=DEFAULT_SCALES)
    args = parser.parse_args(argv)
    threads = args.threads or int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    arch, model_name = ('B1', 'RepOpt-VGG-B1 / RepVGG-B1') if not args.quick else (
        QUICK_ARCH, 'tiny RepOpt-VGG / RepVGG (quick)')
    batch, size = (4, 32) if args.quick else (args.batch, args.size)
    repeats = args.repeats or (2 if args.quick else 15)
    scales = scales_for(RepOptVGG(arch), None if args.quick else args.scales)

    optimizer_step = round_robin(optimizer_jobs(arch, scales), repeats, warmup=1)
    train_step = round_robin(train_jobs(arch, scales, batch, size), repeats, warmup=1)
    ratios = {
        'optimizer_step RepOptSGD / torch SGD':
            optimizer_step['RepOptSGD']['median_s'] / optimizer_step['torch SGD']['median_s'],
        'optimizer_step RepOptAdamW / torch AdamW':
            optimizer_step['RepOptAdamW']['median_s'] / optimizer_step['torch AdamW']['median_s'],
        'train_step RepOpt-VGG / RepVGG':
            train_step['RepOpt-VGG + RepOptSGD']['median_s']
            / train_step['RepVGG train-time + SGD']['median_s'],
        'train_step RepOpt-VGG / floor':
            train_step['RepOpt-VGG + RepOptSGD']['median_s']
            / train_step['RepOpt-VGG + torch SGD (floor)']['median_s'],
    }
    params = sum(p.numel() for p in RepOptVGG(arch, num_classes=1000).parameters())
    payload = dict(model=model_name, quick=args.quick, threads=threads, batch=batch, size=size,
                   repeats=repeats, parameters=params, scales=scales['source'],
                   load_average=list(os.getloadavg()), targets=TARGETS,
                   optimizer_step=optimizer_step, train_step=train_step, ratios=ratios,
                   meets_targets=dict(
                       optimizer_step=max(ratios['optimizer_step RepOptSGD / torch SGD'],
                                          ratios['optimizer_step RepOptAdamW / torch AdamW'])
                       <= TARGETS['optimizer_step'],
                       train_step=ratios['train_step RepOpt-VGG / RepVGG']
                       <= TARGETS['train_step']))
    save_results('repopt_speed', args.quick, payload, args.out_dir, plot)
    for key, value in ratios.items():
        print(f'{key}: {value:.3f}')
    return payload


if __name__ == '__main__':
    main()
