"""``quant_report.json`` (written atomically) and the summary lines the CLI prints."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Dict, List

__all__ = ['write_report', 'summary_lines', 'versions']


def versions() -> Dict[str, str]:
    """Versions of the packages that decide the numbers."""
    import onnx
    import onnxruntime
    import torch
    from .. import __version__
    return dict(rep_mm=__version__, torch=torch.__version__, onnx=onnx.__version__,
                onnxruntime=onnxruntime.__version__, python=platform.python_version())


def write_report(data: Dict[str, Any], work: Path) -> Path:
    """Write ``data`` to ``work/quant_report.json`` through a temp file; returns the path."""
    from ..io import write_json_atomic
    path = work / 'quant_report.json'
    data = dict(data, versions=versions(), load_average=list(os.getloadavg()),
                cpu_count=os.cpu_count())
    write_json_atomic(data, str(path))
    return path


def summary_lines(data: Dict[str, Any]) -> List[str]:
    """Human-readable summary of a report."""
    lines = [f'{data["task"]}: calibrated on {data["calibration"]["used"]} train image(s); '
             f'{data["quantization"]["weights"]} weights, '
             f'{data["quantization"]["activations"]} activations']
    kernels = data['int8_kernels']
    lines.append(f'  onnxruntime int8 kernels: {kernels["int8_kernels"]}; float compute ops '
                 f'left: {kernels["float_compute_ops"] or "none"}')
    for name, metric in data['evaluation']['metrics'].items():
        shown = ', '.join(f'{k} {v:.4g}' for k, v in metric.items())
        lines.append(f'  {name}: {shown}')
    for name, agree in data['evaluation']['agreement'].items():
        lines.append(f'  {name} agrees with {agree["against"]} on {agree["fraction"]:.2%} of '
                     f'{agree["of"]} {agree["unit"]}')
    lat = data['latency']
    lines.append(f'  onnxruntime latency (batch 1, {lat["threads"]} thread(s), median of '
                 f'{lat["runs"]}): fp32 {lat["model"]["fp32"]["median_ms"]:.3f} ms, int8 '
                 f'{lat["model"]["int8"]["median_ms"]:.3f} ms (int8/fp32 '
                 f'{lat["model_ratio"]:.2f})')
    lines.append(f'  end to end incl. preprocessing: fp32 '
                 f'{lat["end_to_end"]["fp32"]["median_ms"]:.3f} ms, int8 '
                 f'{lat["end_to_end"]["int8"]["median_ms"]:.3f} ms (int8/fp32 '
                 f'{lat["end_to_end_ratio"]:.2f})')
    lines.append(f'  work dir: {data["work_dir"]} (end2end_int8.onnx, quant_report.json)')
    return lines
