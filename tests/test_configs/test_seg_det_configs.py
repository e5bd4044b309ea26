"""Every mmseg / mmdet config of rep_mm builds; the digit-scene configs train, validate and test.

ADE20K / Cityscapes / COCO configs: built from the file, BN statistics randomised, one forward
at a small size, converted with a verified relative error <= 1e-5. Digit-scene configs: a few
iterations with a real Runner (tools/train.py's config loading), then the test loop twice on the
same checkpoint with the same randomised BN statistics: training form vs. converted in place by
``rep_mm.ReparameterizeHook`` -- the metrics must be identical.
"""
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from rep_mm import reparameterize
from rep_mm.blocks import RepVGGBlock
from rep_mm.datasets import prepare_digit_scenes
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..helpers import load_train_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs'
TOLERANCE = 1e-5


def full_configs():
    """The RepVGG / RepMLPNet configs for the real data sets (ADE20K, Cityscapes, COCO).

    The OREPA ResNet-50 dense-prediction configs are checked by test_resnet_configs.py.
    """
    found = sorted(CONFIGS.glob('pspnet/*_4xb*.py')) + sorted(CONFIGS.glob('upernet/*_4xb*.py'))
    found += sorted(CONFIGS.glob('retinanet/*_coco.py'))
    found += sorted(CONFIGS.glob('faster_rcnn/*_coco.py'))
    return [p for p in found if 'orepa' not in p.name]


def digit_configs():
    """The digit-scene task configs (the QAT fine-tuning configs in configs/quantization start
    from a trained checkpoint: tests/test_quantization trains them)."""
    return sorted(p for p in CONFIGS.glob('*/*digit-scenes*.py') if p.parent.name != 'quantization')


def config_id(path: Path) -> str:
    return path.stem


def test_the_config_set_is_complete():
    names = {p.stem for p in full_configs()}
    for head, vgg_suffix in (('pspnet', '-d8'), ('upernet', '')):
        for arch in ('a0', 'b1g2', 'b2'):
            assert any(n.startswith(f'{head}_repvgg-{arch}{vgg_suffix}_') and 'ade20k' in n
                       for n in names), (head, arch)
            assert any(n.startswith(f'{head}_repvgg-{arch}{vgg_suffix}_') and 'cityscapes' in n
                       for n in names), (head, arch)
        for arch in ('t256', 'b256'):
            for data in ('ade20k-512x512', 'cityscapes-512x1024'):
                assert any(n.startswith(f'{head}_repmlpnet-{arch}_') and n.endswith(data)
                           for n in names), (head, arch, data)
    assert any(n.startswith('retinanet_repvgg') for n in names)
    assert any(n.startswith('faster-rcnn_repvgg') and 'reppafpn' in n for n in names)
    assert len(digit_configs()) == 4


def test_repmlpnet_configs_use_crops_their_partitions_tile():
    """Every RepMLPNet config trains on crops that are multiples of input_size_multiple()."""
    from rep_mm.backbones import RepMLPNet
    paths = [p for p in full_configs() + digit_configs() if 'repmlpnet' in p.name]
    assert len(paths) == 9
    for path in paths:
        cfg = Config.fromfile(str(path))
        multiple = RepMLPNet(arch=cfg.model.backbone.arch).input_size_multiple()
        crop = cfg.model.data_preprocessor['size']
        assert crop[0] % multiple[0] == 0 and crop[1] % multiple[1] == 0, (path.name, multiple)
        if 'digit-scenes' in path.name:
            assert multiple == (64, 64) and tuple(crop) == (64, 64)
        else:  # whole-image testing pads to the multiple and crops the prediction back
            assert multiple == (256, 256)
            assert cfg.model.data_preprocessor.test_cfg == dict(size_divisor=256)


def small_input(cfg: Config) -> torch.Tensor:
    """The smallest sensible input: what the backbone's partitions tile, else 64x64."""
    backbone = cfg.model.backbone
    if backbone.type == 'rep_mm.RepMLPNet':
        from rep_mm.backbones import RepMLPNet
        height, width = RepMLPNet(arch=backbone.arch).input_size_multiple()
        return torch.randn(1, 3, height, width)
    return torch.randn(1, 3, 64, 64)


def checked_full_config(path: Path) -> Config:
    """The config, with the rep_mm conventions every full config must follow asserted."""
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == dict(imports=['rep_mm'], allow_failed_imports=False)
    assert cfg.model.type in ('rep_mm.RepEncoderDecoder', 'rep_mm.RepRetinaNet',
                              'rep_mm.RepFasterRCNN')
    assert cfg.model.backbone.type in ('rep_mm.RepVGG', 'rep_mm.RepMLPNet')
    init = cfg.model.backbone.init_cfg
    assert init.type == 'Pretrained' and init.prefix == 'backbone.'
    assert init.checkpoint.endswith('_backbone-train.pth')
    assert [h.type for h in cfg.custom_hooks] == ['rep_mm.ReparameterizeHook']
    if cfg.model.type == 'rep_mm.RepEncoderDecoder':
        assert cfg.model.pretrained is None
        assert 'depth' not in cfg.model.backbone  # the ResNet keys were deleted
        assert cfg.model.decode_head.num_classes == (150 if 'ade20k' in path.name else 19)
        if '-d8_' in path.name:
            assert cfg.model.backbone.strides == (2, 2, 2, 1, 1)
            assert cfg.model.backbone.dilations == (1, 1, 1, 2, 4)
    return cfg


def head_inputs_match(model) -> None:
    """The channels every head / neck expects are those the backbone returns."""
    widths = model.backbone.out_channels
    if hasattr(model, 'decode_head'):
        head = model.decode_head
        expected = ([widths[i] for i in head.in_index] if isinstance(head.in_index, (list, tuple))
                    else widths[head.in_index])
        assert head.in_channels == (sum(expected) if head.input_transform == 'resize_concat'
                                    else expected)
        aux = model.auxiliary_head
        assert aux.in_channels == widths[aux.in_index]
    else:
        assert list(model.neck.in_channels) == list(widths)[-len(model.neck.in_channels):]


# forward + conversion on one data set per model; RepMLPNet-B256 only differs from T256 by its
# arch table (converted by the T256 configs and tests/test_backbones), so it is only built
FORWARD = [p for p in full_configs() if 'cityscapes' not in p.name and 'b256' not in p.name]
BUILD_ONLY = [p for p in full_configs() if p not in FORWARD]


@pytest.mark.parametrize('path', BUILD_ONLY, ids=config_id)
def test_full_config_builds(path):
    cfg = checked_full_config(path)
    init_default_scope(cfg.default_scope)
    head_inputs_match(MODELS.build(cfg.model))


def det_samples(x: torch.Tensor):
    from mmdet.structures import DetDataSample
    shape = tuple(x.shape[-2:])
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(len(x))]


@pytest.mark.parametrize('path', FORWARD, ids=config_id)
def test_full_config_builds_forwards_and_converts(path):
    cfg = checked_full_config(path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    head_inputs_match(model)
    model = randomize_bn_statistics(revert_sync_batchnorm(model), seed=1).eval()
    x = small_input(cfg)
    samples = det_samples(x) if cfg.default_scope == 'mmdet' else None

    def forward(m):
        return m(x, samples, mode='tensor')

    with torch.no_grad():
        outputs = forward(model)
    assert all(torch.isfinite(t).all() for t in _tensors(outputs))
    if cfg.model.type == 'rep_mm.RepEncoderDecoder':
        assert outputs.shape[:2] == (1, cfg.model.decode_head.num_classes)
    report = reparameterize(model, verify=forward)
    assert report.max_rel_error <= TOLERANCE, report.summary()
    assert model.backbone.deploy
    if cfg.model.get('neck') and cfg.model.neck.type == 'rep_mm.RepPAFPN':
        assert any(n.startswith('neck.') for n in report.converted)
        assert not any(isinstance(m, _BatchNorm) for b in model.neck.modules()
                       if isinstance(b, RepVGGBlock) for m in b.modules())


def _tensors(outputs):
    if isinstance(outputs, torch.Tensor):
        yield outputs
    else:
        for item in outputs:
            yield from _tensors(item)


# --------------------------------------------------------------- digit scenes: train and test
class RandomizeBNBeforeTest(Hook):
    """Give the loaded model random BN statistics before the test loop (and before conversion)."""

    priority = 'HIGHEST'

    def before_test_epoch(self, runner) -> None:
        randomize_bn_statistics(runner.model, seed=11)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    return prepare_digit_scenes(tmp_path_factory.mktemp('data') / 'scenes', num_train=24,
                                num_val=8, size=64, seed=0)['root']


def make_runner(cfg: Config):
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)


def metric_values(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}


@pytest.mark.slow
@pytest.mark.parametrize('path', digit_configs(), ids=config_id)
def test_digit_config_trains_and_tests_identically_after_conversion(path, scenes, tmp_path):
    train_tool = load_train_tool()
    iters = 3
    args = train_tool.parse_args([str(path), '--work-dir', str(tmp_path), '--cfg-options',
                                  f'data_root={scenes}', f'train_cfg.max_iters={iters}',
                                  f'train_cfg.val_interval={iters}',
                                  'train_dataloader.batch_size=4', 'val_dataloader.batch_size=4',
                                  'test_dataloader.batch_size=4'])
    cfg = train_tool.load_config(args)
    is_det = cfg.default_scope == 'mmdet'
    if is_det:  # every box counts: an untrained detector scores below any useful threshold
        if 'rcnn' in cfg.model.test_cfg:
            cfg.model.test_cfg.rcnn.score_thr = 0.0
        else:
            cfg.model.test_cfg.score_thr = 0.0
    assert Path(cfg.train_dataloader.dataset.data_root) == Path(scenes)
    assert Path(cfg.test_dataloader.dataset.data_root) == Path(scenes)
    base_cfg = copy.deepcopy(cfg)

    runner = train_tool.build_runner(cfg)
    with train_tool.safe_checkpoint_loading():
        runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'ReparameterizeHook')
    assert hook.last_check is not None and hook.last_check['phase'] == 'val'
    assert hook.last_check['max_rel_error'] <= TOLERANCE
    # the training model keeps its branches; the checkpoint is in training form
    assert not runner.model.backbone.deploy
    checkpoint = Path(runner.work_dir) / f'iter_{iters}.pth'
    assert checkpoint.is_file()

    results = {}
    for form in ('train', 'deploy'):
        test_cfg = copy.deepcopy(base_cfg)
        test_cfg.work_dir = str(tmp_path / f'test_{form}')
        test_cfg.load_from = str(checkpoint)
        test_cfg.experiment_name = f'{path.stem}_test_{form}'
        test_cfg.custom_hooks = ([dict(type='rep_mm.ReparameterizeHook', raise_on_failure=True)]
                                 if form == 'deploy' else [])
        test_runner = make_runner(test_cfg)
        test_runner.register_hook(RandomizeBNBeforeTest())
        with train_tool.safe_checkpoint_loading():
            results[form] = metric_values(test_runner.test())
        model = test_runner.model
        blocks = [m for m in model.modules() if getattr(m, 'deploy', None) is not None
                  and hasattr(m, 'switch_to_deploy') and m is not model]
        if form == 'deploy':
            hook = next(h for h in test_runner.hooks
                        if type(h).__name__ == 'ReparameterizeHook')
            assert hook.last_check['phase'] == 'test'
            assert hook.last_check['max_rel_error'] <= TOLERANCE
            assert model.backbone.deploy and all(b.deploy for b in blocks)
            assert not any(isinstance(m, _BatchNorm) for b in model.modules()
                           if isinstance(b, RepVGGBlock) for m in b.modules())
        else:
            assert not model.backbone.deploy
    assert results['train'], f'the test loop returned no metrics: {results}'
    key = 'mIoU' if not is_det else 'coco/bbox_mAP'
    assert key in results['train'] and math.isfinite(results['train'][key])
    assert results['deploy'] == results['train']
