"""The segmentation half of the int8 benchmark: PSPNet on digit scenes (64x64, 11 classes).

The stock config ``configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py``
(RepVGG tiny backbone, output stride 4, stage 4 dilated, PSP head, AdamW) with five backbones /
flows, all trained for the same iterations from scratch (QAT: fine-tuned from (1)), then
:func:`rep_mm.quantization.quantize` with a 72x72 static deploy config
(``configs/quantization/segmentation_onnxruntime_static-72x72.py``; the shipped one resizes to
192 px, three times the training scale):

1. ``RepVGG PTQ``: the stock config trained, converted, PTQ;
2. ``RepVGG QAT-after-conversion``: (1) fine-tuned with
   ``configs/quantization/pspnet_repvgg-tiny-d4_qat-after-conversion_digit-scenes-64x64.py``;
3. ``RepVGG EqK-QAT``: (1) fine-tuned with
   ``configs/quantization/pspnet_repvgg-tiny-d4_eqk-qat_digit-scenes-64x64.py``;
4. ``RepOpt-VGG PTQ``: backbone ``rep_mm.RepOptVGG`` (``mode='target'``) trained with RepOptAdamW
   (``rep_mm.RepOptOptimWrapperConstructor``, the config's lr / decay) and ``RepOptInitHook``, its
   scales from a Hyper-Search on the digits classification with the same backbone layout (the
   paper's recipe: search on a small classification set, transfer);
5. ``plain VGG PTQ``: the same ``RepOptVGG`` target backbone with the config's plain AdamW.

``RepOptVGG`` has no dilation: rows 4 and 5 use stage strides (2, 1, 2, 2, 1) like the RepVGG
backbone but stage 4 is not dilated (same parameters, smaller receptive field of stage 4).

The QAT flows fake-quantize the backbone's re-param blocks only (the PSP head's convs are
quantized by PTQ but train in floating point). Logits: the graph's output
``(1, 11, 72, 72)`` (the deploy config has ``with_argmax=False``; the head stays float)."""
import copy
import os.path as osp
from pathlib import Path
from typing import Dict, Optional

from int8_common import (ROWS, LogitStats, base_row, dump, print_row, row_jobs, run_quantize,
                         train)

REPO = Path(__file__).resolve().parents[1]
SEG_CONFIG = REPO / 'configs' / 'pspnet' / 'pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py'
QAT_A_CONFIG = (REPO / 'configs' / 'quantization' /
                'pspnet_repvgg-tiny-d4_qat-after-conversion_digit-scenes-64x64.py')
QAT_B_CONFIG = (REPO / 'configs' / 'quantization' /
                'pspnet_repvgg-tiny-d4_eqk-qat_digit-scenes-64x64.py')
DEPLOY_CONFIG = REPO / 'configs' / 'quantization' / 'segmentation_onnxruntime_static-72x72.py'
TINY_ARCH = dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5])
REPOPT_STRIDES = (2, 1, 2, 2, 1)
FULL_SCENES = dict(num_train=2000, num_val=200)
QUICK_SCENES = dict(num_train=32, num_val=8)
QUICK_BATCH = 4
METRIC = 'mIoU'


def set_iters(cfg, iters: int, warmup: bool) -> None:
    """``iters`` iterations: the config's 50-iteration warm-up (``warmup`` and long enough)
    then poly decay to the end; validation and the checkpoint at the end."""
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    begin = 50 if warmup and iters > 100 else 0
    cfg.param_scheduler = (
        [dict(type='LinearLR', start_factor=0.02, by_epoch=False, begin=0, end=begin)]
        if begin else []) + [dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False,
                                  begin=begin, end=iters)]


def make_cfg(config: Path, work_dir: str, data_dir: str, quick: bool, iters: int,
             warmup: bool, seed: int):
    """A digit-scene config of the benchmark: data root, schedule, seed, quick batch size."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    cfg.data_root = data_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key]['dataset']['data_root'] = data_dir
        if quick:
            cfg[key]['batch_size'] = QUICK_BATCH
    cfg.work_dir, cfg.launcher = work_dir, 'none'
    set_iters(cfg, iters, warmup)
    cfg.randomness = dict(seed=seed)
    cfg.default_hooks.logger.interval = 1 if quick else 50
    cfg.default_hooks.pop('visualization', None)
    if quick:
        for hook in cfg.get('custom_hooks') or []:
            if str(hook.get('type', '')).endswith('QATHook') and 'calib_batches' in hook:
                hook['calib_batches'] = 2
    return cfg


def repopt_backbone(cfg) -> Dict:
    """The RepOptVGG target backbone replacing ``cfg``'s RepVGG (same arch, strides, outs)."""
    stock = cfg.model.backbone
    return dict(type='rep_mm.RepOptVGG', arch=copy.deepcopy(TINY_ARCH), mode='target',
                strides=REPOPT_STRIDES, out_indices=tuple(stock.out_indices),
                norm_cfg=copy.deepcopy(stock.norm_cfg))


# ----------------------------------------------------------------------------- measurement
def logit_row(cfg_path: str, report: Dict) -> Dict:
    """The graphs' logits on every val scene: :class:`LogitStats` over all pixels, and the
    int8 = fp32 pixels of the packed predictions (``pred_sem_seg`` at the original size, as
    :func:`rep_mm.quantization.evaluate` packs them: the report's agreement must equal it)."""
    from rep_mm.quantization.calibration import _static_hw
    from rep_mm.quantization.data import build_dataset, build_preprocessor, load_config, \
        to_onnx_input
    from rep_mm.quantization.evaluate import pack_predictions
    from rep_mm.quantization.latency import make_session
    cfg = load_config(cfg_path)
    preprocessor = build_preprocessor(cfg, 'mmseg')
    sessions = {key: make_session(Path(report[f'{key}_onnx']), 1) for key in ('fp32', 'int8')}
    shape = sessions['fp32'].get_inputs()[0].shape
    input_name = sessions['fp32'].get_inputs()[0].name
    dataset = build_dataset(cfg, 'val_dataloader', _static_hw(shape), 'mmseg', 'validation')
    stats, same, pixels = LogitStats(), 0, 0
    for index in range(len(dataset)):
        array, samples = to_onnx_input(dataset[index], preprocessor, shape, f'val {index}')
        z = {key: s.run(None, {input_name: array}) for key, s in sessions.items()}
        if z['fp32'][0].ndim != 4 or z['fp32'][0].shape[1] < 2:
            raise RuntimeError(f'{report["fp32_onnx"]}: output {z["fp32"][0].shape} is not '
                               f'(N, C, H, W) logits; the deploy config needs with_argmax=False')
        stats.add(z['fp32'][0], z['int8'][0])
        packed = {key: pack_predictions('mmseg', out, copy.deepcopy(samples))[0]
                  for key, out in z.items()}
        a, b = (packed[k].pred_sem_seg.data for k in ('fp32', 'int8'))
        same += int((a == b).sum())
        pixels += int(a.numel())
    out = stats.result()
    out.update(images=len(dataset), packed_same_pixels=same, packed_pixels=pixels)
    return out


def measure(name: str, cfg_path: str, checkpoint: str, work: Path, per_tensor: bool,
            runs: int, calib: int) -> Dict:
    """PTQ (72x72 deploy config) + evaluation + logits + latency of one segmentor."""
    report = run_quantize(cfg_path, checkpoint, work, per_tensor, calib, runs,
                          deploy_config=str(DEPLOY_CONFIG))
    row = base_row(report, METRIC, cfg_path, checkpoint, work)
    row['aAcc'] = {k: report['evaluation']['metrics'][k]['aAcc'] for k in ('fp32', 'int8')}
    row['logits'] = logit_row(cfg_path, report)
    print_row('seg', name, METRIC, row)
    return row


def run(work: str, quick: bool, iters: int, qat_iters: int, hs_epochs: int, per_tensor: bool,
        seed: int, calib: int, runs: int, weight_decay: Optional[float] = None) -> Dict:
    """Train the five segmentors (and the RepOpt Hyper-Search), measure them; the task's
    part of the payload."""
    from rep_mm.cli.extract_scales import extract_scales_file
    from rep_mm.datasets import prepare_digit_scenes

    import int8_cls
    scenes = QUICK_SCENES if quick else FULL_SCENES
    data_dir = osp.join(work, 'data', 'digit_scenes_quick' if quick else 'digit_scenes')
    prepare_digit_scenes(data_dir, size=64, seed=0, **scenes)
    root = osp.join(work, 'seg')

    def cfg_of(config, sub, n_iters=iters, warmup=True):
        cfg = make_cfg(config, osp.join(root, sub), data_dir, quick, n_iters, warmup, seed)
        if weight_decay is not None and sub in ('repvgg', 'repopt_target', 'plain'):
            cfg.optim_wrapper.optimizer.weight_decay = weight_decay
        return cfg

    trained, cfgs = {}, {}
    repvgg_cfg = cfg_of(SEG_CONFIG, 'repvgg')
    cfgs['repvgg'] = dump(repvgg_cfg, osp.join(root, 'configs', 'repvgg.py'))
    trained['repvgg'] = train(repvgg_cfg, 'seg_repvgg', METRIC)
    for key, config in (('qat_a', QAT_A_CONFIG), ('qat_b', QAT_B_CONFIG)):
        cfg = cfg_of(config, key, qat_iters, warmup=False)
        cfg.model.weight_quant = 'per_tensor' if per_tensor else 'per_channel'
        cfg.load_from = trained['repvgg']['checkpoint']
        trained[key] = train(cfg, f'seg_{key}', METRIC)
        trained[key]['deploy_checkpoint'] = osp.join(root, key, 'qat_deploy.pth')
    # RepOpt-VGG: Hyper-Search on the digits with the segmentation backbone's layout
    hs = int8_cls.train_repopt_hs(root, 'repopt_hs', int8_cls.prepare_digits(work), quick,
                                  TINY_ARCH, hs_epochs, seed, None, strides=REPOPT_STRIDES)
    target_cfg = cfg_of(SEG_CONFIG, 'repopt_target')
    target_cfg.model.backbone = repopt_backbone(target_cfg)
    scales = osp.join(root, 'scales.pth')
    stock_opt = target_cfg.optim_wrapper.optimizer
    target_cfg.optim_wrapper = dict(
        constructor='rep_mm.RepOptOptimWrapperConstructor', scales=scales,
        optimizer=dict(type='rep_mm.RepOptAdamW', lr=stock_opt.lr, betas=stock_opt.betas,
                       weight_decay=stock_opt.weight_decay))
    target_cfg.custom_hooks = [dict(type='rep_mm.RepOptInitHook'),
                               dict(type='rep_mm.ReparameterizeHook')]
    cfgs['repopt'] = dump(target_cfg, osp.join(root, 'configs', 'repopt_target.py'))
    extract_scales_file(hs['checkpoint'], scales, cfgs['repopt'], overwrite=True)
    trained['repopt'] = train(target_cfg, 'seg_repopt_target', METRIC)
    plain_cfg = cfg_of(SEG_CONFIG, 'plain')
    plain_cfg.model.backbone = repopt_backbone(plain_cfg)
    cfgs['plain'] = dump(plain_cfg, osp.join(root, 'configs', 'plain.py'))
    trained['plain'] = train(plain_cfg, 'seg_plain', METRIC)

    rows = {}
    for name, key, cfg_path, ckpt in row_jobs(cfgs, trained):
        rows[name] = measure(name, cfg_path, ckpt, Path(root) / 'int8' / key, per_tensor,
                             runs, calib)
        rows[name]['training'] = {k: v for k, v in trained[key].items()
                                  if k in (METRIC, 'train_seconds', 'iterations')}
    rows['RepOpt-VGG PTQ']['training']['hs_accuracy/top1'] = hs['accuracy/top1']
    notes = [
        'mIoU columns: the val metric (mmseg IoUMetric) of quantize\'s report on the val '
        'scenes (digits unseen in training), predictions at 72x72 resized (nearest) to 64x64; '
        'logit error / SNR over every logit of the (1, 11, 72, 72) graph outputs',
        f'QAT rows fine-tune (1)\'s checkpoint for {qat_iters} iterations at lr 2e-4 (1/10), '
        f"{'per-tensor' if per_tensor else 'per-channel'} int8 weight fake quantization of the "
        f'backbone blocks only (the PSP head is PTQ-quantized but trained in float)',
        'RepOpt-VGG and plain rows: rep_mm.RepOptVGG target backbone (no dilation support: '
        'stage 4 is not dilated, unlike the RepVGG rows); RepOpt scales from a Hyper-Search '
        'on the digits classification with the same layout; plain = the stock AdamW']
    return dict(metric=METRIC, metric_label='mIoU', rows=rows,
                val_scenes=rows[ROWS[0]]['logits']['images'],
                setting=dict(config=str(SEG_CONFIG), deploy_config=str(DEPLOY_CONFIG),
                             iters=iters, qat_iters=qat_iters, hs_epochs=hs_epochs,
                             scenes=scenes, calibration_images=calib,
                             weight_decay=weight_decay if weight_decay is not None else 1e-4,
                             repopt_plain_backbone=dict(strides=REPOPT_STRIDES, dilation=None),
                             qat_fake_quant_weights='per-tensor' if per_tensor
                             else 'per-channel'),
                notes=notes)
