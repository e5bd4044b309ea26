"""The classification half of the int8 benchmark: five models on the digits (32x32, 10 classes).

Every model has the same deploy-form shape (a conv3x3-BN-ReLU VGG of the chosen ``--arch``, the
same data, schedule, epochs and learning rate), is trained with mmengine's Runner through the
repo's configs and then goes through :func:`rep_mm.quantization.quantize`:

1. ``RepVGG PTQ``: ``configs/repvgg/repvgg-tiny_1xb32_digits.py`` trained, converted, PTQ;
2. ``RepVGG QAT-after-conversion``: (1)'s checkpoint fine-tuned with
   ``configs/quantization/repvgg-tiny_qat-after-conversion_digits.py``, ``qat_deploy.pth`` PTQ'd;
3. ``RepVGG EqK-QAT``: (1)'s checkpoint fine-tuned with
   ``configs/quantization/repvgg-tiny_eqk-qat_digits.py``, ``qat_deploy.pth`` PTQ'd;
4. ``RepOpt-VGG PTQ``: Hyper-Search (``configs/repopt/repoptvgg-tiny-hs_1xb32_digits.py``) ->
   ``extract_scales_file`` -> target training with RepOptSGD
   (``configs/repopt/repoptvgg-tiny-target_1xb32_digits.py``), PTQ;
5. ``plain VGG PTQ``: the RepOpt-VGG *target* structure (``mode='target'``: one conv3x3 + BN +
   ReLU per block) trained with the RepVGG config's plain SGD (no scales, no RepOptInitHook).

The QAT rows fake-quantize the weights per channel, or per tensor under ``--per-tensor`` (the
configs' ``model.weight_quant``), as the deployment does. Logits: the input of the graph's
Softmax, added as an extra graph output (nothing else changed)."""
import copy
import json
import os.path as osp
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from int8_common import (ROWS, LogitStats, base_row, dump, print_row, row_jobs, run_quantize,
                         train)

REPO = Path(__file__).resolve().parents[1]
REPVGG_CONFIG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
QAT_A_CONFIG = REPO / 'configs' / 'quantization' / 'repvgg-tiny_qat-after-conversion_digits.py'
QAT_B_CONFIG = REPO / 'configs' / 'quantization' / 'repvgg-tiny_eqk-qat_digits.py'
HS_CONFIG = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-hs_1xb32_digits.py'
TARGET_CONFIG = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'

ARCHS = {
    # the 7-block digits arch of every digits config (32/64/128/256 channels)
    'tiny': dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
    # RepVGG-A0's layout (2/4/14/1 blocks, widths 0.75 x3 + 2.5) at half its width: 22 blocks,
    # 24/48/96/640 channels (0.375 * 64/128/256, 1.25 * 512)
    'a0-like': dict(num_blocks=[2, 4, 14, 1], width_factor=[0.375, 0.375, 0.375, 1.25]),
}
QUICK_TEST_IMAGES = 32
METRIC = 'accuracy/top1'


def parse_arch(value: str) -> Dict:
    """A name of :data:`ARCHS` or a JSON dict with ``num_blocks`` and ``width_factor``."""
    if value in ARCHS:
        return copy.deepcopy(ARCHS[value])
    arch = json.loads(value)
    if not isinstance(arch, dict) or {'num_blocks', 'width_factor'} - set(arch):
        raise SystemExit(f'--arch: {sorted(ARCHS)} or a JSON dict with num_blocks and '
                         f'width_factor, got {value!r}')
    return arch


def set_model_arch(model_cfg, arch: Dict, strides=None) -> None:
    """Put ``arch`` (and ``strides``) into an ImageClassifier config (or the one a QATModel
    wraps)."""
    inner = model_cfg.model if 'model' in model_cfg else model_cfg
    inner.backbone.arch = copy.deepcopy(arch)
    if strides is not None:
        inner.backbone.strides = tuple(strides)
    inner.head.in_channels = int(512 * arch['width_factor'][3])


def set_epochs(cfg, epochs: int, warmup: bool) -> None:
    """``epochs`` epochs, cosine decay (after one linear warm-up epoch with ``warmup``)."""
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = epochs
    if warmup and epochs > 1:
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
                 convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', T_max=epochs - 1, by_epoch=True, begin=1,
                 end=epochs, eta_min=0.0, convert_to_iter_based=True)]
    else:
        cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=epochs, by_epoch=True,
                                    begin=0, end=epochs, eta_min=0.0,
                                    convert_to_iter_based=True)]


def make_cfg(config: Path, work_dir: str, data_dir: str, quick: bool, counts: Dict, arch: Dict,
             epochs: int, warmup: bool, weight_decay: Optional[float], seed: int = 0,
             strides=None):
    """A digits config of the benchmark: data, arch, schedule, decay, seed, quick subsets."""
    from rep_mm.demo.common import digits_demo_config, spread_indices
    cfg = digits_demo_config(config, data_dir, work_dir, quick, counts)
    set_model_arch(cfg.model, arch, strides)
    set_epochs(cfg, epochs, warmup)
    if weight_decay is not None:
        cfg.optim_wrapper.optimizer.weight_decay = weight_decay
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs,
                                        max_keep_ckpts=1)
    cfg.randomness = dict(seed=seed)
    if quick:  # 32 test images (the quick demo config has 128)
        for key in ('val_dataloader', 'test_dataloader'):
            cfg[key]['dataset']['indices'] = spread_indices(counts['test'], QUICK_TEST_IMAGES)
        for hook in cfg.get('custom_hooks') or []:
            if str(hook.get('type', '')).endswith('QATHook') and 'calib_batches' in hook:
                hook['calib_batches'] = 2
    return cfg


def prepare_digits(work: str) -> Dict:
    """Write (or reuse) the digits under ``work/data/digits``: ``{data_dir, counts}``."""
    from rep_mm.datasets import prepare_digits as prepare
    data_dir = osp.join(work, 'data', 'digits')
    return dict(data_dir=data_dir, counts=prepare(data_dir, size=32, seed=0)['counts'])


def train_repopt_hs(work: str, sub: str, digits: Dict, quick: bool, arch: Dict, epochs: int,
                    seed: int, weight_decay: Optional[float], strides=None) -> Dict:
    """Hyper-Search of RepOptimizer on the digits (``HS_CONFIG``) with ``arch`` / ``strides``."""
    cfg = make_cfg(HS_CONFIG, osp.join(work, sub), digits['data_dir'], quick, digits['counts'],
                   arch, epochs, True, weight_decay, seed, strides)
    return train(cfg, sub, METRIC)


# ----------------------------------------------------------------------------- measurement
def with_logits_output(onnx_path: str, out_path: str) -> str:
    """A copy of ``onnx_path`` whose Softmax input is also a graph output (the pre-softmax
    logits); raises if the graph has no single Softmax."""
    import onnx
    model = onnx.load(onnx_path)
    softmax = [n for n in model.graph.node if n.op_type == 'Softmax']
    if len(softmax) != 1:
        raise RuntimeError(f'{onnx_path}: {len(softmax)} Softmax nodes, expected 1')
    name = softmax[0].input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                 None))
    onnx.save(model, out_path)
    return name


def logit_row(cfg_path: str, report: Dict, work: Path) -> Dict:
    """Pre-softmax logits of the fp32 and int8 graphs on every val image (batch 1, the val
    pipeline and data preprocessor as :func:`rep_mm.quantization.evaluate` feeds them):
    :class:`LogitStats` plus top-1 recomputed from the logits."""
    from rep_mm.quantization.calibration import _static_hw
    from rep_mm.quantization.data import build_dataset, build_preprocessor, load_config, \
        to_onnx_input
    from rep_mm.quantization.latency import make_session
    cfg = load_config(cfg_path)
    preprocessor = build_preprocessor(cfg, 'mmpretrain')
    sessions = {}
    for key in ('fp32', 'int8'):
        path = str(work / f'{key}_with_logits.onnx')
        with_logits_output(report[f'{key}_onnx'], path)
        sessions[key] = make_session(Path(path), 1)
    shape = sessions['fp32'].get_inputs()[0].shape
    input_name = sessions['fp32'].get_inputs()[0].name
    dataset = build_dataset(cfg, 'val_dataloader', _static_hw(shape), 'mmpretrain',
                            'validation')
    stats, correct, labels = LogitStats(), {'fp32': 0, 'int8': 0}, 0
    for index in range(len(dataset)):
        array, samples = to_onnx_input(dataset[index], preprocessor, shape, f'val {index}')
        z = {key: s.run(None, {input_name: array})[-1] for key, s in sessions.items()}
        stats.add(z['fp32'], z['int8'])
        label = int(samples[0].gt_label[0])
        for key in z:
            correct[key] += int(int(np.argmax(z[key][0])) == label)
        labels += 1
    out = stats.result()
    out.update(images=labels, top1_from_logits={k: 100.0 * v / labels
                                                for k, v in correct.items()})
    return out


def measure(name: str, cfg_path: str, checkpoint: str, work: Path, per_tensor: bool,
            runs: int, calib: int) -> Dict:
    """PTQ + evaluation + logits + latency of one model."""
    report = run_quantize(cfg_path, checkpoint, work, per_tensor, calib, runs)
    row = base_row(report, METRIC, cfg_path, checkpoint, work)
    row['logits'] = logit_row(cfg_path, report, work)
    print_row('cls', name, 'top-1', row)
    return row


def run(work: str, quick: bool, arch: Dict, epochs: int, qat_epochs: int, per_tensor: bool,
        weight_decay: Optional[float], seed: int, calib: int, runs: int) -> Dict:
    """Train the five classifiers, measure them; the task's part of the payload."""
    digits = prepare_digits(work)
    common = dict(data_dir=digits['data_dir'], quick=quick, counts=digits['counts'], arch=arch,
                  seed=seed)

    def cfg_of(config, sub, n_epochs=epochs, warmup=True, decay=weight_decay):
        return make_cfg(config, osp.join(work, 'cls', sub), epochs=n_epochs, warmup=warmup,
                        weight_decay=decay, **common)

    trained, cfgs = {}, {}
    repvgg_cfg = cfg_of(REPVGG_CONFIG, 'repvgg')
    cfgs['repvgg'] = dump(repvgg_cfg, osp.join(work, 'cls', 'configs', 'repvgg.py'))
    trained['repvgg'] = train(repvgg_cfg, 'cls_repvgg', METRIC)
    for key, config in (('qat_a', QAT_A_CONFIG), ('qat_b', QAT_B_CONFIG)):
        cfg = cfg_of(config, key, qat_epochs, warmup=False, decay=None)
        cfg.model.weight_quant = 'per_tensor' if per_tensor else 'per_channel'
        cfg.load_from = trained['repvgg']['checkpoint']
        trained[key] = train(cfg, f'cls_{key}', METRIC)
        trained[key]['deploy_checkpoint'] = osp.join(work, 'cls', key, 'qat_deploy.pth')
    from rep_mm.cli.extract_scales import extract_scales_file
    hs = train_repopt_hs(osp.join(work, 'cls'), 'repopt_hs', digits, quick, arch, epochs, seed,
                         weight_decay)
    target_cfg = cfg_of(TARGET_CONFIG, 'repopt_target')
    scales = osp.join(work, 'cls', 'scales.pth')
    target_cfg.optim_wrapper.scales = scales
    cfgs['repopt'] = dump(target_cfg, osp.join(work, 'cls', 'configs', 'repopt_target.py'))
    extract_scales_file(hs['checkpoint'], scales, cfgs['repopt'], overwrite=True)
    trained['repopt'] = train(target_cfg, 'cls_repopt_target', METRIC)
    plain_cfg = cfg_of(TARGET_CONFIG, 'plain')
    plain_cfg.optim_wrapper = copy.deepcopy(repvgg_cfg.optim_wrapper)
    plain_cfg.custom_hooks = []
    cfgs['plain'] = dump(plain_cfg, osp.join(work, 'cls', 'configs', 'plain.py'))
    trained['plain'] = train(plain_cfg, 'cls_plain', METRIC)

    rows = {}
    for name, key, cfg_path, ckpt in row_jobs(cfgs, trained):
        rows[name] = measure(name, cfg_path, ckpt, Path(work) / 'cls' / 'int8' / key,
                             per_tensor, runs, calib)
        rows[name]['training'] = {k: v for k, v in trained[key].items()
                                  if k in (METRIC, 'train_seconds', 'iterations')}
    rows['RepOpt-VGG PTQ']['training']['hs_' + METRIC] = hs[METRIC]
    notes = [
        'top-1 columns: the val metric (mmpretrain Accuracy) of quantize\'s report on the '
        'digits test split; logit error / SNR on the pre-softmax outputs of the two graphs',
        'QAT rows fine-tune (1)\'s checkpoint for the extra QAT epochs at lr 0.005, with '
        f"{'per-tensor' if per_tensor else 'per-channel'} int8 weight fake quantization",
        'plain VGG = rep_mm.RepOptVGG mode=target (conv3x3+BN+ReLU blocks) trained with the '
        'RepVGG config\'s SGD (rep_mm.RepVGG has no option to drop its branches)']
    return dict(metric='accuracy/top1', metric_label='top-1', rows=rows,
                test_images=rows[ROWS[0]]['logits']['images'],
                setting=dict(arch=arch, epochs=epochs, qat_epochs=qat_epochs,
                             weight_decay=weight_decay if weight_decay is not None else 1e-4,
                             calibration_images=calib,
                             qat_fake_quant_weights='per-tensor' if per_tensor
                             else 'per-channel'),
                notes=notes)
