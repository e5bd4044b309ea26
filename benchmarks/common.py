"""Shared helpers of the benchmark scripts: machine description, JSON output, timing, CLI, plots."""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def machine() -> Dict:
    """What the numbers were measured on."""
    return dict(python=platform.python_version(), torch=torch.__version__,
                processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                date=time.strftime('%Y-%m-%d %H:%M:%S'))


def write_json(name: str, payload: Dict, out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``payload`` (plus the machine description) atomically to ``out_dir/name.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f'{name}.json'
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(dict(machine=machine(), **payload), indent=2) + '\n')
    os.replace(tmp, path)
    return path


def median_seconds(fn: Callable[[], None], repeats: int, warmup: int = 1) -> List[float]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs; returns all timings."""
    for _ in range(warmup):
        fn()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return timings


def median(values: List[float]) -> float:
    return statistics.median(values)


def save_results(stem: str, quick: bool, payload: Dict, out_dir: Path, plot: Callable,
                 plot_data=None) -> str:
    """Write ``payload`` to ``out_dir/NAME.json`` (:func:`write_json`) and
    ``plot(plot_data, out_dir/NAME.png)`` (``plot_data`` defaults to ``payload``), with
    ``NAME = stem + '_quick'`` for a quick run (so quick runs never overwrite real results).
    Returns NAME."""
    name = f'{stem}_quick' if quick else stem
    write_json(name, payload, out_dir)
    plot(payload if plot_data is None else plot_data, out_dir / f'{name}.png')
    return name


def benchmark_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: described by the first line of the script's
    docstring ``doc``, with ``--quick`` (help ``quick_help``) and ``--out-dir``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help=quick_help)
    parser.add_argument('--out-dir', type=Path, default=RESULTS_DIR,
                        help='where the JSON and the plot go (default benchmarks/results)')
    return parser


def subplots(*args, **kwargs) -> Tuple:
    """``matplotlib.pyplot.subplots`` on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Lay out ``fig``, write it to ``path`` and close it (frees its memory)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
