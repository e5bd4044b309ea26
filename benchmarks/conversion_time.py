"""Conversion time per model: how long ``rep_mm.reparameterize`` takes to fold every block.

For each arch (every RepVGG / RepVGGplus / RepMLPNet arch and ACB / DBB / OREPA ResNet-18/50):
median wall time of ``reparameterize(copy)`` over repeats (a fresh deep copy of the
training-form classifier each time; the copy is not timed), with the thread count fixed, plus
parameters before / after and the number of converted blocks. Writes
results/conversion_time.json and results/conversion_time.png.

    python benchmarks/conversion_time.py [--quick] [--threads N] [--repeats 5] [--models ...]
"""
import copy
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import all_names, build_model, count_params  # noqa: E402
from common import benchmark_parser, median, save_figure, save_results, subplots  # noqa: E402

from rep_mm import reparameterize  # noqa: E402

QUICK_MODELS = ['RepVGG-A0', 'RepMLPNet-T224', 'OREPA-ResNet18']


def measure(name: str, repeats: int, quick: bool) -> dict:
    model = build_model(name, quick)
    runs, blocks, params_after = [], 0, 0
    for _ in range(repeats):
        candidate = copy.deepcopy(model)
        gc.collect()
        start = time.perf_counter()
        report = reparameterize(candidate)
        runs.append(time.perf_counter() - start)
        blocks, params_after = len(report.converted), count_params(candidate)
        del candidate
    return dict(model=name, quick_arch=quick, median_s=median(runs), runs_s=runs, blocks=blocks,
                params_before_m=count_params(model) / 1e6, params_after_m=params_after / 1e6)


def plot(rows, path: Path) -> None:
    fig, ax = subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    ax.bar(range(len(rows)), [r['median_s'] * 1e3 for r in rows], color='tab:green')
    ax.set_xticks(range(len(rows)), [r['model'] for r in rows], rotation=60, ha='right',
                  fontsize=7)
    ax.set_ylabel('conversion time, median (ms)')
    ax.set_title('rep_mm.reparameterize: time to fold every block')
    save_figure(fig, path)


def main(argv=None):
    parser = benchmark_parser(__doc__, 'three tiny models (for tests)')
    parser.add_argument('--models', nargs='+', help='benchmark names (default: all archs)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.repeats = args.models or QUICK_MODELS, 2
    models = args.models or [name for _, name in all_names()]
    torch.set_num_threads(args.threads)
    rows = []
    for name in models:
        rows.append(measure(name, args.repeats, args.quick))
        print(f"{name}: {rows[-1]['blocks']} blocks in {rows[-1]['median_s'] * 1e3:.1f} ms "
              f"(median of {args.repeats})", flush=True)
    save_results('conversion_time', args.quick, dict(threads=args.threads, repeats=args.repeats,
                                                     quick=args.quick, rows=rows),
                 args.out_dir, plot, rows)
    return rows


if __name__ == '__main__':
    main()
