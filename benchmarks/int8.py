"""int8 in one run: five models side by side on digits (classification) and digit scenes (PSPNet).

Issue 13's measurement. Per task, five models of one deploy-form shape are trained with
mmengine's Runner through the repo's configs and then go through the SAME int8 path,
:func:`rep_mm.quantization.quantize` (fold -> ``rep_mm.deploy.export`` -> onnxruntime static
QDQ int8, MinMax calibration on training images, the config's val metric, interleaved
onnxruntime latency):

1. ``RepVGG PTQ``: the converted RepVGG, post-training quantized;
2. ``RepVGG QAT-after-conversion``: (1) converted, BN inserted after each fused conv, fine-tuned
   with fake quantization (``configs/quantization/*qat-after-conversion*``), folded, PTQ'd;
3. ``RepVGG EqK-QAT``: (1) fine-tuned with its fused (equivalent) kernels fake-quantized
   (``configs/quantization/*eqk-qat*``), converted, PTQ'd;
4. ``RepOpt-VGG PTQ``: Hyper-Search -> scales -> RepOpt-VGG target trained with RepOptimizer, PTQ;
5. ``plain VGG PTQ``: the RepOpt-VGG target structure (conv3x3 + BN + ReLU) trained normally, PTQ.

The classification half is :mod:`int8_cls` (``--arch``, ``--epochs``, ``--qat-epochs``,
``--weight-decay``), the segmentation half :mod:`int8_seg` (``--seg-iters``,
``--seg-qat-iters``). Per model: fp32 and int8 metric (top-1 / mIoU of ``quantize``'s report),
int8-vs-fp32 logit error ``max|z8 - z32| / max|z32|`` and SNR
``10 log10(sum z32^2 / sum (z8 - z32)^2)`` dB, changed arg-max, onnxruntime latency (1 thread,
batch 1, medians of interleaved runs) of both graphs. ``--per-tensor``: per-tensor int8 weights
in the deployment AND in the QAT fake quantization (activations are always per-tensor uint8).

Writes ``results/int8[_quick].{json,png,md}`` (``--out-dir``). ``--quick`` (the test suite's
smoke run, numbers mean nothing): 1 epoch of 2 iterations per classifier on 64 images, 32 test
images; 2 iterations per segmentor at batch 4 on 32 scenes, 8 val scenes; 32 calibration images;
10 latency runs.

    python benchmarks/int8.py [--quick] [--task both|cls|seg] [--per-tensor] [--seed 0]
        [--arch tiny|a0-like|JSON] [--epochs 4] [--qat-epochs 2] [--weight-decay 1e-4]
        [--seg-iters 800] [--seg-qat-iters 200]
    python benchmarks/int8.py --render results/int8.json   # md + png again from the JSON
"""
import os
import os.path as osp
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_parser, save_results  # noqa: E402
from int8_cls import ARCHS, parse_arch  # noqa: E402
from int8_common import markdown, plot  # noqa: E402

TASKS = {'both': ('classification', 'segmentation'), 'cls': ('classification',),
         'seg': ('segmentation',)}


def build_parser():
    parser = benchmark_parser(__doc__, 'tiny smoke run of both tasks (numbers mean nothing)')
    parser.add_argument('--task', choices=sorted(TASKS), default='both',
                        help='which half to run (default both, side by side)')
    parser.add_argument('--per-tensor', action='store_true',
                        help='per-tensor int8 weights (deployment and QAT; default per channel)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='classification fp32 epochs (default 4) and RepOpt Hyper-Search '
                             'epochs of both tasks')
    parser.add_argument('--qat-epochs', type=int, default=None,
                        help='classification QAT epochs (default 2)')
    parser.add_argument('--arch', default='tiny',
                        help=f"classification arch: {' | '.join(ARCHS)} | a JSON dict "
                             f"(default tiny; the segmentor's backbone is always tiny)")
    parser.add_argument('--weight-decay', type=float, default=None,
                        help='weight decay of the fp32 trainings (default the configs\' 1e-4)')
    parser.add_argument('--seg-iters', type=int, default=None,
                        help='segmentation fp32 iterations (default 800; quick 2)')
    parser.add_argument('--seg-qat-iters', type=int, default=None,
                        help='segmentation QAT iterations (default 200; quick 2)')
    parser.add_argument('--calib', type=int, default=None,
                        help='calibration images (default 512; quick 32)')
    parser.add_argument('--runs', type=int, default=None,
                        help='interleaved latency runs per graph (default 200; quick 10)')
    parser.add_argument('--seed', type=int, default=0, help='training seed of every model')
    parser.add_argument('--work-dir', default=None, help='default: a temporary directory')
    parser.add_argument('--render', type=Path, default=None, metavar='JSON',
                        help='only rewrite the .md and .png of a result JSON of this script '
                             '(next to it; nothing is trained or measured)')
    return parser


def describe_cls(part: Dict) -> str:
    s = part['setting']
    return (f"digits 32x32, arch `{s['arch']}`, {s['epochs']} epochs (+{s['qat_epochs']} QAT), "
            f"weight decay {s['weight_decay']}, {s['calibration_images']} calibration images, "
            f"{part['test_images']} test images.")


def describe_seg(part: Dict) -> str:
    s = part['setting']
    return (f"PSPNet-RepVGG-tiny (output stride 4) on digit scenes 64x64, deployed at 72x72, "
            f"{s['iters']} iterations (+{s['qat_iters']} QAT), batch "
            f"{'4' if s['scenes']['num_train'] < 100 else '16'}, "
            f"{s['scenes']['num_train']} train scenes, {s['calibration_images']} calibration "
            f"scenes, {part['val_scenes']} val scenes.")


def render(path: Path) -> str:
    """Rewrite ``path``'s markdown and figure from its measured JSON; returns the markdown."""
    import json
    payload = json.loads(path.read_text())
    text = markdown(payload, dict(classification=describe_cls, segmentation=describe_seg))
    path.with_suffix('.md').write_text(text)
    plot(payload, path.with_suffix('.png'))
    return text


def main(argv: Optional[List[str]] = None) -> Dict:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        print(render(args.render))
        return {}
    torch.set_num_threads(1)
    arch = parse_arch(args.arch)
    q = args.quick
    epochs = args.epochs or (1 if q else 4)
    qat_epochs = args.qat_epochs or (1 if q else 2)
    seg_iters = args.seg_iters or (2 if q else 800)
    seg_qat_iters = args.seg_qat_iters or (2 if q else 200)
    calib = args.calib or (32 if q else 512)
    runs = args.runs or (10 if q else 200)

    import int8_cls
    import int8_seg
    started = time.perf_counter()
    tasks, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = osp.abspath(args.work_dir or tmp)
        for task in TASKS[args.task]:
            begin = time.perf_counter()
            if task == 'classification':
                tasks[task] = int8_cls.run(work, q, arch, epochs, qat_epochs, args.per_tensor,
                                           args.weight_decay, args.seed, calib, runs)
            else:
                tasks[task] = int8_seg.run(work, q, seg_iters, seg_qat_iters, epochs,
                                           args.per_tensor, args.seed, calib, runs,
                                           args.weight_decay)
            seconds[task] = round(time.perf_counter() - begin, 1)
    notes = [
        'int8 = rep_mm.quantization.quantize: onnxruntime static QDQ, int8 weights '
        f"{'per tensor' if args.per_tensor else 'per channel'}, uint8 activations per tensor "
        '(MinMax calibration on training images), the head (last Conv / Gemm onward) kept '
        'float, as rep-mm quantize does',
        'latency: onnxruntime CPU, 1 intra-op thread, batch 1, medians of interleaved runs on a '
        'shared 2-core machine: compare the ratios, not the absolute times',
        'every model of a task is trained in this run with the same seed, data and schedule; '
        'the QAT rows start from (1) and add their fine-tuning, so compare each row\'s int8 '
        'with its own fp32 (the drop column)']
    payload = dict(
        quick=q, setting=dict(task=args.task, per_tensor=args.per_tensor,
                              weights='per-tensor' if args.per_tensor else 'per-channel',
                              activations='per-tensor uint8', seed=args.seed,
                              arch_name=args.arch if args.arch in ARCHS else 'custom',
                              latency_runs=runs),
        tasks=tasks, notes=notes, seconds=seconds,
        total_seconds=round(time.perf_counter() - started, 1))
    name = save_results('int8', q, payload, args.out_dir, plot)
    text = markdown(payload, dict(classification=describe_cls, segmentation=describe_seg))
    (args.out_dir / f'{name}.md').write_text(text)
    print(text)
    return payload


if __name__ == '__main__':
    main()
