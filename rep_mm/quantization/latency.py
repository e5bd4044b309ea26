"""onnxruntime sessions with fixed threads and interleaved latency medians.

Interleaving (fp32, int8, fp32, int8 ... with the order flipped every round) exposes both
graphs to the same machine load, so their ratio stays meaningful on a busy machine even when
the absolute numbers do not.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict

__all__ = ['make_session', 'interleaved_latency']


def make_session(path: Path, threads: int = 1) -> Any:
    """A CPU ``InferenceSession`` of ``path``: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, all graph optimisations (the int8 fusions included)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def interleaved_latency(calls: Dict[str, Callable[[], Any]], runs: int,
                        warmup: int = 5) -> Dict[str, Dict[str, float]]:
    """Time every callable ``runs`` times, interleaved; returns per name the median, 25th
    and 75th percentile and minimum in milliseconds and the number of runs."""
    if runs <= 0:
        raise ValueError(f'runs must be > 0, got {runs}')
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: Dict[str, list] = {name: [] for name in names}
    for round_ in range(runs):
        for name in (names if round_ % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    result = {}
    for name, values in times.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        result[name] = dict(median_ms=statistics.median(values), p25_ms=q[0], p75_ms=q[2],
                            min_ms=min(values), runs=len(values))
    return result
