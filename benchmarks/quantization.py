"""Post-training int8 quantization of RepOpt-VGG vs a converted RepVGG, trained the same way.

The RepOptimizer paper's claim: a structurally re-parameterized RepVGG quantizes badly after
conversion (the fused kernels have outlier-heavy distributions), while RepOpt-VGG, which trains
the plain structure directly, quantizes like a normal network. Measured here on the digits:

1. RepOpt-VGG: Hyper-Search -> extracted scales -> target training with RepOptSGD
   (:func:`rep_mm.demo.repopt.run_repopt_demo`, the tiny digits arch);
2. RepVGG of the same shape (``configs/repvgg/repvgg-tiny_1xb32_digits.py``: same stages,
   widths, strides, data, schedule, epochs, lr) trained with SGD, then converted;
3. both in deploy form (RepOpt-VGG: BN folded; RepVGG: branches fused) go through torch's CPU
   post-training flow: FX ``prepare_fx`` -> calibration on training images -> ``convert_fx``,
   with the ``'x86'`` default qconfig (per-channel int8 weights, histogram activations) and with
   per-tensor int8 weights (the harsher setting the paper's argument is about);
4. top-1 on the digits test split in fp32 and int8, the relative error of the int8 logits and
   the number of changed predictions, and per conv layer the weight outlier ratio
   ``max|W| / std(W)`` and the per-tensor int8 weight SQNR (dB).

Writes ``results/quantization[_quick].json`` and ``.png``. ``--quick``: 8 training iterations
per model on 64 images, 32 calibration images (a smoke test; accuracies mean nothing).

    python benchmarks/quantization.py [--quick] [--work-dir DIR] [--threads 1]
"""
import copy
import os.path as osp
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_parser, save_figure, save_results, subplots  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPVGG_CONFIG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
QCONFIGS = ('x86 per-channel', 'per-tensor weights')


class PlainClassifier(nn.Module):
    """Deploy-form backbone -> global average pool -> the head's linear layer (FX-traceable)."""

    def __init__(self, backbone: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.fc = backbone, fc

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def train_repvgg(work_dir: str, data_dir: str, quick: bool, counts: Dict) -> Dict:
    from rep_mm.demo.classification import digits_demo_config
    from rep_mm.demo.repopt import _train_and_validate
    cfg = digits_demo_config(REPVGG_CONFIG, data_dir, work_dir, quick, counts)
    result = _train_and_validate(cfg, 'quant_repvgg')
    del result['runner']
    return dict(result, config=str(REPVGG_CONFIG))


def deployed_classifier(config: str, checkpoint: str,
                        verify_input: Tensor) -> Tuple[nn.Module, Dict]:
    """The trained mm classifier in deploy form, as a :class:`PlainClassifier` (eval mode)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from rep_mm import reparameterize
    from rep_mm.io.checkpoint import load_checkpoint_file
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    model.load_state_dict(load_checkpoint_file(checkpoint)['state_dict'], strict=True)
    plain = PlainClassifier(model.backbone, model.head.fc).eval()
    report = reparameterize(plain, verify=lambda m: m(verify_input))
    if not report.passed:
        raise RuntimeError(f'conversion of {config} changed the outputs: {report.summary()}')
    return plain, dict(converted_blocks=len(report.converted),
                       max_rel_error=report.max_rel_error)


def digits_tensors(data_dir: str, split: str, config: str,
                   limit: int = 0) -> Tuple[Tensor, Tensor]:
    """Normalized images ``(N, 3, 32, 32)`` and labels of one digits split, as the model sees
    them at test time (the config's test pipeline and data preprocessor)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.dataset.data_root, loader_cfg.dataset.data_prefix = data_dir, split
    if limit:
        loader_cfg.dataset.indices = limit
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=False)
    preprocessor = MODELS.build(dict(type='ClsDataPreprocessor', **cfg.data_preprocessor))
    images, labels = [], []
    for batch in Runner.build_dataloader(loader_cfg):
        data = preprocessor(batch, False)
        images.append(data['inputs'])
        labels.append(torch.stack([s.gt_label for s in data['data_samples']]).flatten())
    return torch.cat(images), torch.cat(labels)


@torch.no_grad()
def logits(model: nn.Module, images: Tensor, batch: int = 128) -> Tensor:
    return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])


def top1(outputs: Tensor, labels: Tensor) -> float:
    return 100.0 * int((outputs.argmax(1) == labels).sum()) / len(labels)


def qconfig_mapping(name: str):
    from torch.ao.quantization import (HistogramObserver, QConfig, QConfigMapping,
                                       default_weight_observer, get_default_qconfig_mapping)
    if name == 'x86 per-channel':
        return get_default_qconfig_mapping('x86')
    return QConfigMapping().set_global(QConfig(
        activation=HistogramObserver.with_args(reduce_range=True),
        weight=default_weight_observer))


@torch.no_grad()
def quantize(model: nn.Module, name: str, calibration: Tensor) -> nn.Module:
    """torch's FX post-training static quantization (x86 engine), calibrated on ``calibration``."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = 'x86'
    with warnings.catch_warnings():  # torch 2.14 deprecates this flow for torchao's pt2e (noted)
        warnings.simplefilter('ignore')
        prepared = prepare_fx(copy.deepcopy(model).eval(), qconfig_mapping(name),
                              (calibration[:1],))
        for i in range(0, len(calibration), 64):
            prepared(calibration[i:i + 64])
        return convert_fx(prepared)


def weight_statistics(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """Per conv layer: ``max|W| / std(W)`` and the SQNR (dB) of symmetric per-tensor int8."""
    stats = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach().double()
            scale = w.abs().max() / 127
            q = torch.clamp(torch.round(w / scale), -128, 127) * scale
            sqnr = 10 * torch.log10(w.pow(2).sum() / (w - q).pow(2).sum())
            stats[name] = dict(max_over_std=(w.abs().max() / w.std()).item(),
                               int8_per_tensor_sqnr_db=sqnr.item())
    return stats


def evaluate(model: nn.Module, test: Tuple[Tensor, Tensor], calibration: Tensor) -> Dict:
    """fp32 / int8 top-1, and how far the int8 logits are from the fp32 ones: the relative
    error ``||z_int8 - z_fp32|| / ||z_fp32||`` (over all test logits) and the share of test
    images whose prediction changes (finer measures than top-1 on an easy task)."""
    images, labels = test
    fp32 = logits(model, images)
    row = dict(fp32_top1=top1(fp32, labels), int8_top1={}, int8_logit_rel_error={},
               int8_changed_predictions={}, weights=weight_statistics(model))
    for name in QCONFIGS:
        int8 = logits(quantize(model, name, calibration), images)
        row['int8_top1'][name] = top1(int8, labels)
        row['int8_logit_rel_error'][name] = ((int8 - fp32).norm() / fp32.norm()).item()
        row['int8_changed_predictions'][name] = int((int8.argmax(1) != fp32.argmax(1)).sum())
    row['int8_drop'] = {k: row['fp32_top1'] - v for k, v in row['int8_top1'].items()}
    return row


def plot(payload: Dict, path: Path) -> None:
    fig, (ax, ax2) = subplots(1, 2, figsize=(11, 4))
    models = list(payload['models'])
    bars = ['fp32'] + list(QCONFIGS)
    width = 0.8 / len(bars)
    for i, bar in enumerate(bars):
        values = [payload['models'][m]['fp32_top1'] if bar == 'fp32'
                  else payload['models'][m]['int8_top1'][bar] for m in models]
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(models))]
        ax.bar(xs, values, width, label=bar if bar == 'fp32' else f'int8 {bar}')
        for x, v in zip(xs, values):
            ax.text(x, v, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
    ticks = [m + '\nint8 logit rel. error ' + ' / '.join(
        f'{v:.4f}' for v in payload['models'][m]['int8_logit_rel_error'].values())
        for m in models]
    ax.set_xticks(range(len(models)), ticks, fontsize=7)
    ax.set_ylabel('digits test top-1 (%)')
    ax.set_ylim(0, 118)
    ax.legend(fontsize=7, loc='upper center', ncol=3)
    ax.set_title('post-training int8 (torch FX, x86)', fontsize=9)
    for m in models:
        stats = payload['models'][m]['weights']
        ax2.plot(range(len(stats)), [s['max_over_std'] for s in stats.values()], 'o-', label=m)
    ax2.set_xlabel('conv layer (deploy form, input to output)')
    ax2.set_ylabel('max|W| / std(W)')
    ax2.set_title('weight outliers per layer', fontsize=9)
    ax2.legend(fontsize=7)
    fig.suptitle('quick smoke run: accuracies mean nothing' if payload['quick']
                 else 'tiny arch on the digits, trained the same way', fontsize=9)
    save_figure(fig, path, dpi=110)


def main(argv=None) -> Dict:
    parser = benchmark_parser(__doc__, 'tiny smoke run')
    parser.add_argument('--work-dir', default=None,
                        help='training outputs (default: a temporary directory)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--calibration-images', type=int, default=None,
                        help='training images used to calibrate (default 512; quick 32)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from rep_mm.datasets import prepare_digits
    from rep_mm.demo.repopt import TARGET_CONFIG, run_repopt_demo

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = osp.abspath(args.work_dir or tmp)
        data_dir = osp.join(work_dir, 'data', 'digits')
        counts = prepare_digits(data_dir, size=32, seed=0)['counts']
        repopt = run_repopt_demo(osp.join(work_dir, 'repopt'), quick=args.quick,
                                 data_dir=data_dir)
        repvgg = train_repvgg(osp.join(work_dir, 'repvgg'), data_dir, args.quick, counts)
        test = digits_tensors(data_dir, 'test', str(REPVGG_CONFIG),
                              limit=128 if args.quick else 0)
        calibration = digits_tensors(
            data_dir, 'train', str(REPVGG_CONFIG),
            limit=args.calibration_images or (32 if args.quick else 512))[0]
        models, conversions = {}, {}
        for name, config, checkpoint in (
                ('RepOpt-VGG', str(TARGET_CONFIG), repopt['target']['checkpoint']),
                ('RepVGG (converted)', str(REPVGG_CONFIG), repvgg['checkpoint'])):
            plain, conversions[name] = deployed_classifier(config, checkpoint, test[0][:16])
            models[name] = dict(evaluate(plain, test, calibration), conversion=conversions[name])
    models['RepOpt-VGG']['training'] = dict(
        hs_top1=repopt['hs_top1'], top1_in_runner=repopt['target_top1'],
        train_seconds=repopt['target']['train_seconds'], scales=repopt['scale_statistics'])
    models['RepVGG (converted)']['training'] = dict(top1_in_runner=repvgg['top1'],
                                                    train_seconds=repvgg['train_seconds'])
    payload = dict(quick=args.quick, threads=args.threads, test_images=len(test[1]),
                   calibration_images=len(calibration), qconfigs=list(QCONFIGS),
                   engine='x86', flow='torch.ao.quantization.quantize_fx prepare_fx/convert_fx',
                   flow_note='deprecated in torch 2.14 in favour of torchao pt2e; still works',
                   models=models, total_seconds=round(time.perf_counter() - started, 1))
    save_results('quantization', args.quick, payload, args.out_dir, plot)
    for model, row in models.items():
        int8 = ', '.join(f"{k} {v:.2f} (logit rel. error "
                         f"{row['int8_logit_rel_error'][k]:.4f})"
                         for k, v in row['int8_top1'].items())
        print(f"{model}: fp32 {row['fp32_top1']:.2f} | int8 {int8}")
    return payload


if __name__ == '__main__':
    main()
