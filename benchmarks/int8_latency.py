"""onnxruntime int8 vs fp32 latency of a converted RepVGG-A0 classifier (batch 1, 1 thread).

RepVGG-A0 (``rep_mm.backbones.RepVGG(arch='A0')`` + global average pooling + a 1000-way linear
layer, BN statistics randomised) is converted with ``rep_mm.reparameterize``, exported with
torch's TorchScript exporter (opset 11, as ``rep-mm export``), and quantized by
``rep_mm.quantization.ort_quant.quantize_onnx``: onnxruntime's ``quant_pre_process`` +
``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration on
real images: digit scenes from ``rep_mm.datasets`` resized to 224 px, ImageNet
normalisation; the head's fc stays float). The graph onnxruntime optimises from it must hold
int8 kernels (``QLinearConv``). Both graphs are timed in onnxruntime (``intra_op_num_threads``
fixed, one inter-op thread), interleaved, medians; the target is int8/fp32 <= 0.35 (on a quiet
machine a plain ORT static QDQ per-channel quantization ran 7.2 ms vs 26.1 ms = 0.28x).

Writes ``results/int8_latency[_quick].json`` and ``.png``. ``--quick``: the tiny RepVGG of the
test suite at 32 px, 8 calibration images, 10 runs (a smoke test; the ratio means little).

    python benchmarks/int8_latency.py [--quick] [--threads 1] [--runs 200] [--calib 64]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import build_model  # noqa: E402
from common import benchmark_parser, save_figure, save_results, subplots  # noqa: E402

from rep_mm import reparameterize  # noqa: E402

TARGET_RATIO = 0.35
MEAN = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
STD = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)


def scene_images(count: int, size: int, seed: int, work: Path) -> np.ndarray:
    """``count`` real digit scenes (``rep_mm.datasets.prepare_digit_scenes``, 64 px) resized
    to ``size`` (bilinear), as normalised float32 ``(count, 3, size, size)``."""
    import cv2

    from rep_mm.datasets import prepare_digit_scenes
    root = work / f'scenes_{seed}'
    prepare_digit_scenes(root, num_train=count, num_val=1, size=64, seed=seed)
    files = sorted((root / 'images' / 'train').glob('*.png'))[:count]
    images = [cv2.resize(cv2.imread(str(f), cv2.IMREAD_COLOR), (size, size),
                         interpolation=cv2.INTER_LINEAR) for f in files]
    batch = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
    return (batch - MEAN) / STD


class ArrayReader:
    """onnxruntime ``CalibrationDataReader`` over ``(N, 3, H, W)`` images, one at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.position = images, 0

    def get_next(self):
        if self.position >= len(self.images):
            return None
        self.position += 1
        return {'input': self.images[self.position - 1:self.position]}


def measure(quick: bool, threads: int, runs: int, calib: int, work: Path) -> dict:
    from rep_mm.quantization.latency import interleaved_latency, make_session
    from rep_mm.quantization.ort_quant import (check_op_types, int8_kernels, op_counts,
                                               quantize_onnx)
    name = 'RepVGG-A0'
    size = 32 if quick else 224
    model = build_model(name, quick)
    report = reparameterize(model)
    fp32_path, int8_path = work / 'fp32.onnx', work / 'int8.onnx'
    x = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, (x,), str(fp32_path), dynamo=False, opset_version=11,
                      input_names=['input'], output_names=['output'])
    settings = quantize_onnx(fp32_path, int8_path, ArrayReader(scene_images(calib, size, 0,
                                                                            work)),
                             op_types=check_op_types(op_counts(fp32_path), None))
    kernels = int8_kernels(int8_path, threads)
    sessions = {'fp32': make_session(fp32_path, threads), 'int8': make_session(int8_path,
                                                                                threads)}
    held_out = scene_images(8, size, 1, work)
    outs = {k: np.concatenate([s.run(None, {'input': held_out[i:i + 1]})[0]
                               for i in range(len(held_out))]) for k, s in sessions.items()}
    rel = float(np.abs(outs['int8'] - outs['fp32']).max() / np.abs(outs['fp32']).max())
    agree = float((outs['int8'].argmax(1) == outs['fp32'].argmax(1)).mean())
    feed = {'input': held_out[:1]}
    latency = interleaved_latency({k: (lambda s=s: s.run(None, feed)) for k, s in
                                   sessions.items()}, runs, warmup=10)
    ratio = latency['int8']['median_ms'] / latency['fp32']['median_ms']
    return dict(model=name, arch='tiny (quick)' if quick else 'A0', input=[1, 3, size, size],
                blocks_converted=len(report.converted), threads=threads, runs=runs,
                calibration_images=calib, quantization=settings,
                int8_kernels=kernels['int8_kernels'],
                float_compute_ops=kernels['float_compute_ops'], latency=latency,
                int8_over_fp32=ratio, target_ratio=TARGET_RATIO,
                int8_over_fp32_p25=latency['int8']['p25_ms'] / latency['fp32']['p25_ms'],
                int8_over_fp32_min=latency['int8']['min_ms'] / latency['fp32']['min_ms'],
                meets_target=bool(ratio <= TARGET_RATIO),
                int8_vs_fp32=dict(max_rel_logit_error=rel, top1_agreement=agree,
                                  images=len(held_out),
                                  note='random weights: agreement and error only show that '
                                       'the int8 graph computes the same function roughly'),
                fp32_bytes=fp32_path.stat().st_size, int8_bytes=int8_path.stat().st_size)


def plot(payload: dict, path: Path) -> None:
    row = payload['result']
    fig, ax = subplots(figsize=(5, 3.5))
    names = ['fp32', 'int8']
    values = [row['latency'][n]['median_ms'] for n in names]
    errs = [[v - row['latency'][n]['p25_ms'] for n, v in zip(names, values)],
            [row['latency'][n]['p75_ms'] - v for n, v in zip(names, values)]]
    ax.bar(names, values, yerr=errs, color=['#4c72b0', '#dd8452'], capsize=4)
    for i, v in enumerate(values):
        ax.text(i, v, f'{v:.2f} ms', ha='center', va='bottom')
    ax.set_ylabel('onnxruntime latency, median (ms)')
    ax.set_title(f'{row["model"]} ({row["arch"]}), {row["input"][2]} px, batch 1, '
                 f'{row["threads"]} thread(s)\nint8/fp32 = {row["int8_over_fp32"]:.2f} '
                 f'(target <= {row["target_ratio"]})', fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    parser = benchmark_parser(__doc__, 'tiny RepVGG at 32 px, 8 calibration images, 10 runs')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--runs', type=int, default=None, help='default 200 (quick: 10)')
    parser.add_argument('--calib', type=int, default=None, help='default 64 (quick: 8)')
    args = parser.parse_args(argv)
    runs = args.runs or (10 if args.quick else 200)
    calib = args.calib or (8 if args.quick else 64)
    for flag, value in (('--threads', args.threads), ('--runs', runs), ('--calib', calib)):
        if value <= 0:
            parser.exit(2, f'int8_latency.py: error: {flag} must be > 0, got {value}\n')
    import os
    with tempfile.TemporaryDirectory(prefix='rep_mm_int8_') as tmp:
        result = measure(args.quick, args.threads, runs, calib, Path(tmp))
    payload = dict(quick=args.quick, result=result, load_average=list(os.getloadavg()),
                   note='interleaved medians; on a loaded machine only the ratio is '
                        'meaningful (load_average)')
    save_results('int8_latency', args.quick, payload, args.out_dir, plot)
    print(f'{result["model"]} {result["input"]}: fp32 {result["latency"]["fp32"]["median_ms"]:.3f}'
          f' ms, int8 {result["latency"]["int8"]["median_ms"]:.3f} ms, int8/fp32 '
          f'{result["int8_over_fp32"]:.3f} (target <= {TARGET_RATIO}; p25 ratio '
          f'{result["int8_over_fp32_p25"]:.3f}, min ratio {result["int8_over_fp32_min"]:.3f});'
          f' int8 kernels '
          f'{result["int8_kernels"]}')
    return result


if __name__ == '__main__':
    main()
