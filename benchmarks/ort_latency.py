"""onnxruntime vs PyTorch latency of converted (deploy-form) models, same threads.

For each model (RepVGG-A0, RepVGG-B0, RepMLPNet-T224, OREPA-ResNet18 by default): convert with
``rep_mm.reparameterize``, export to ONNX with torch's TorchScript exporter (``dynamo=False``,
opset 11, as ``rep-mm export`` does), then time eager PyTorch (``torch.no_grad``) and an
onnxruntime CPU session with ``intra_op_num_threads`` = torch's thread count and one inter-op
thread, interleaved round-robin; medians of repeats. The outputs of both are compared (max
relative error). Writes results/ort_latency.json and results/ort_latency.png.

    python benchmarks/ort_latency.py [--quick] [--threads N] [--batch 1] [--size 224]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import build_model, input_size  # noqa: E402
from common import (benchmark_parser, median, median_seconds, save_figure,  # noqa: E402
                    save_results, subplots)

from rep_mm import reparameterize  # noqa: E402

DEFAULT_MODELS = ['RepVGG-A0', 'RepVGG-B0', 'RepMLPNet-T224', 'OREPA-ResNet18']


def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=11,
                      input_names=['input'], output_names=['output'])


def measure(name: str, size: int, batch: int, repeats: int, threads: int, quick: bool,
            work: Path) -> dict:
    import onnxruntime as ort
    model = build_model(name, quick)
    size = input_size(name, model, size)
    report = reparameterize(model)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    path = work / f'{name}.onnx'
    export_onnx(model, x, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    feed = {'input': x.numpy()}
    with torch.no_grad():
        reference = model(x).numpy()
    onnx_out = session.run(None, feed)[0]
    max_rel = float(np.abs(reference - onnx_out).max() / np.abs(reference).max())

    def run_torch():
        with torch.no_grad():
            model(x)

    def run_ort():
        session.run(None, feed)

    jobs = {'pytorch': run_torch, 'onnxruntime': run_ort}
    timings = {k: [] for k in jobs}
    for job in jobs.values():
        median_seconds(job, repeats=0, warmup=2)
    for _ in range(repeats):
        for key, job in jobs.items():
            timings[key] += median_seconds(job, repeats=1, warmup=0)
    result = {k: dict(median_ms=median(v) * 1e3, runs_ms=[t * 1e3 for t in v])
              for k, v in timings.items()}
    return dict(model=name, quick_arch=quick, size=size, batch=batch,
                blocks=len(report.converted),
                max_rel_error=max_rel, onnx_bytes=path.stat().st_size, results=result,
                ort_over_torch=result['onnxruntime']['median_ms'] / result['pytorch']['median_ms'])


def plot(rows, path: Path) -> None:
    fig, ax = subplots(figsize=(max(5, 1.4 * len(rows)), 4))
    xs = np.arange(len(rows))
    for offset, key, colour in ((-0.2, 'pytorch', 'tab:blue'), (0.2, 'onnxruntime', 'tab:orange')):
        ax.bar(xs + offset, [r['results'][key]['median_ms'] for r in rows], 0.4, label=key,
               color=colour)
    ax.set_xticks(xs, [f"{r['model']}\n{r['size']}px b{r['batch']}" for r in rows], fontsize=7)
    ax.set_ylabel('latency, median (ms)')
    ax.set_title('Converted models: onnxruntime vs PyTorch (same threads)')
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv=None):
    parser = benchmark_parser(__doc__, 'tiny models at 32x32 (for tests)')
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats = 32, 3
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix='rep_mm_ort_') as tmp:
        for name in args.models:
            rows.append(measure(name, args.size, args.batch, args.repeats, args.threads,
                                args.quick, Path(tmp)))
            r = rows[-1]
            times = {k: v['median_ms'] for k, v in r['results'].items()}
            print(f"{name}: PyTorch {times['pytorch']:.2f} ms, onnxruntime "
                  f"{times['onnxruntime']:.2f} ms (x{r['ort_over_torch']:.2f}); "
                  f"max rel error {r['max_rel_error']:.1e}", flush=True)
    save_results('ort_latency', args.quick, dict(threads=args.threads, repeats=args.repeats,
                                                 quick=args.quick, rows=rows),
                 args.out_dir, plot, rows)
    return rows


if __name__ == '__main__':
    main()
