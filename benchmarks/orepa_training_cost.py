"""Training cost of OREPA vs DBB vs plain conv-BN: ResNet-18 step time and peak memory, one run.

The OREPA paper's claim: squeezing the branches into one kernel before the conv ("online")
trains at about 0.5x the time and 0.7x the memory of DBB, whose branches all run on the data.
Here: ``rep_mm.ReparamResNet('resnet18', conv_type)`` + a 1000-way linear layer, one training
step = forward, cross-entropy, backward, SGD (momentum) step, on the same batch.

* **Time**: the three variants in one process, interleaved round-robin after one warm-up step
  each, fixed thread count; medians of ``--repeats`` steps.
* **Peak memory**: PyTorch's CPU allocations are invisible to ``tracemalloc``, so each variant
  runs in its own fresh subprocess: the peak resident set ``VmHWM`` (``/proc/self/status``,
  reset to the current RSS through ``/proc/self/clear_refs`` right before the first step) after
  ``--memory-steps`` training steps, minus the resident set ``VmRSS`` just before the first step
  (model, input and imports already in place). (``ru_maxrss`` is useless here: Linux carries it
  over ``exec`` from the parent.) The difference is the extra memory training needs
  (activations kept for backward, gradients, momentum buffers, the generated kernels);
  subprocesses run interleaved too, medians of ``--memory-repeats``.

Writes ``results/orepa_training_cost.json`` and ``.png`` (``*_quick`` with ``--quick``).

    python benchmarks/orepa_training_cost.py [--quick] [--size 224] [--batch 16] [--threads N]
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (benchmark_parser, median, median_seconds, save_figure,  # noqa: E402
                    save_results, subplots)

VARIANTS = ('base', 'dbb', 'orepa')
MEMORY_METHOD = ('peak RSS (VmHWM of /proc/self/status, reset via /proc/self/clear_refs '
                 'before the first step) of a fresh subprocess per variant after the training '
                 'steps, minus its VmRSS right before the first step; model, input and imports '
                 'are in place before that point')


def build(conv_type: str, num_classes: int = 1000) -> nn.Module:
    """ResNet-18 of ``conv_type`` layers + global pooling + linear classifier."""
    from rep_mm.backbones import ReparamResNet
    backbone = ReparamResNet('resnet18', conv_type, out_indices=(3,))
    return nn.Sequential(backbone, _Pool(), nn.Linear(backbone.out_channels[-1], num_classes))


class _Pool(nn.Module):
    def forward(self, feats):
        return feats[-1].mean((2, 3))


def train_step_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def run():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
    return run


def batch(size: int, batch_size: int):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=generator)
    return x, torch.randint(0, 1000, (batch_size,), generator=generator)


def time_steps(size: int, batch_size: int, repeats: int) -> Dict[str, List[float]]:
    x, target = batch(size, batch_size)
    torch.manual_seed(0)
    jobs = {v: train_step_fn(build(v), x, target) for v in VARIANTS}
    for job in jobs.values():  # warm-up (allocator, momentum buffers)
        median_seconds(job, repeats=0, warmup=1)
    timings = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant, job in jobs.items():
            timings[variant] += median_seconds(job, repeats=1, warmup=0)
    return timings


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux ``/proc/self/status``)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f'{field} not found in /proc/self/status (Linux only)')


def memory_worker(variant: str, size: int, batch_size: int, steps: int, threads: int) -> Dict:
    """Runs in the subprocess: the RSS numbers of ``steps`` training steps of one variant."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, target = batch(size, batch_size)
    step = train_step_fn(build(variant), x, target)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak-RSS counter to the current RSS
    before = _status_mb('VmRSS')
    for _ in range(steps):
        step()
    peak = _status_mb('VmHWM')
    return dict(rss_before_mb=before, peak_rss_mb=peak, training_extra_mb=peak - before)


def measure_memory(size: int, batch_size: int, steps: int, repeats: int,
                   threads: int) -> Dict[str, List[Dict]]:
    runs = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            result = subprocess.run(
                [sys.executable, __file__, '--memory-worker', variant, '--size', str(size),
                 '--batch', str(batch_size), '--memory-steps', str(steps),
                 '--threads', str(threads)],
                capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f'memory worker for {variant} failed:\n{result.stderr[-2000:]}')
            runs[variant].append(json.loads(result.stdout.strip().splitlines()[-1]))
    return runs


def plot(payload: Dict, path: Path) -> None:
    res = payload['results']
    fig, axes = subplots(1, 2, figsize=(9, 3.5))
    colors = ['tab:gray', 'tab:red', 'tab:green']
    axes[0].bar(VARIANTS, [res[v]['step_median_s'] for v in VARIANTS], color=colors)
    axes[0].set_ylabel('s / training step (median)')
    axes[1].bar(VARIANTS, [res[v]['training_extra_mb'] for v in VARIANTS], color=colors)
    axes[1].set_ylabel('extra peak RSS of training (MB, median)')
    ratios = payload['ratios']
    fig.suptitle(f"ResNet-18, batch {payload['batch']} x {payload['size']}px, "
                 f"{payload['threads']} threads: OREPA/DBB time "
                 f"{ratios['orepa / dbb (time)']:.2f}, memory {ratios['orepa / dbb (memory)']:.2f}",
                 fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = benchmark_parser(__doc__, 'tiny sizes (for tests)')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--memory-steps', type=int, default=2)
    parser.add_argument('--memory-repeats', type=int, default=2)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--memory-worker', choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.size, args.batch,
                                       args.memory_steps, args.threads)))
        return None
    if args.quick:
        args.size, args.batch, args.repeats, args.memory_repeats = 32, 2, 2, 1
    torch.set_num_threads(args.threads)
    timings = time_steps(args.size, args.batch, args.repeats)
    memory = measure_memory(args.size, args.batch, args.memory_steps, args.memory_repeats,
                            args.threads)
    results = {}
    for v in VARIANTS:
        results[v] = dict(
            step_median_s=median(timings[v]), step_runs_s=timings[v],
            training_extra_mb=median([r['training_extra_mb'] for r in memory[v]]),
            peak_rss_mb=median([r['peak_rss_mb'] for r in memory[v]]), memory_runs=memory[v],
            parameters=sum(p.numel() for p in build(v).parameters()))
    ratios = {}
    for a, b in (('orepa', 'dbb'), ('orepa', 'base'), ('dbb', 'base')):
        ratios[f'{a} / {b} (time)'] = results[a]['step_median_s'] / results[b]['step_median_s']
        ratios[f'{a} / {b} (memory)'] = (results[a]['training_extra_mb'] /
                                         results[b]['training_extra_mb'])
    payload = dict(model='ReparamResNet resnet18 + linear(1000)', size=args.size,
                   batch=args.batch, repeats=args.repeats, threads=args.threads,
                   memory_steps=args.memory_steps, memory_repeats=args.memory_repeats,
                   memory_method=MEMORY_METHOD,
                   paper_claim='OREPA ~0.5x the training time and ~0.7x the memory of DBB',
                   results=results, ratios=ratios)
    save_results('orepa_training_cost', args.quick, payload, args.out_dir, plot)
    for key, value in ratios.items():
        print(f'{key} = {value:.3f}', flush=True)
    return payload


if __name__ == '__main__':
    main()
