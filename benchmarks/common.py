"""Shared helpers of the benchmark scripts: machine description, JSON output, timing."""
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

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
