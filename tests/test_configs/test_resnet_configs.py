"""ResNet configs of every conv type: ImageNet (OREPA recipe), OREPA ResNet-50 detection /
segmentation with the stem lr, stock ResNet-50 trained with OREPA blocks, and CPU digits runs."""
import copy
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, PARAM_SCHEDULERS, init_default_scope

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from rep_mm import reparameterize
from rep_mm.blocks import OREPA, OREPALargeConv
from rep_mm.integrations.stock_backbones import fold_to_stock
from rep_mm.verify.bn_statistics import randomize_bn_statistics
from tests.conftest import load_manifest, relative_error

from ..helpers import load_train_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs'
ARCHS = {'resnet18': 512, 'resnet34': 512, 'resnet50': 2048, 'resnet101': 2048,
         'wide-resnet18-2x': 1024, 'resnext50-32x4d': 2048}
CONV_TYPES = ('base', 'acb', 'dbb', 'orepa')
MANIFESTS = {('resnet18', 'orepa'): 'OREPA-ResNet-18', ('resnet50', 'orepa'): 'OREPA-ResNet-50',
             ('resnet18', 'dbb'): 'DBB-ResNet-18'}
TINY = dict(block='basic', stage_blocks=(1, 1, 1, 1), width=0.125)


def imagenet_config(arch: str, conv_type: str) -> Path:
    return CONFIGS / 'resnet' / f'{arch}_{conv_type}_4xb64_in1k.py'


def load(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def build(model_cfg, meta=False):
    if meta:
        with torch.device('meta'):
            return MODELS.build(model_cfg)
    return MODELS.build(model_cfg)


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_the_imagenet_grid_is_complete():
    found = {p.name for p in (CONFIGS / 'resnet').glob('*_in1k.py')}
    assert found == {imagenet_config(a, c).name for a in ARCHS for c in CONV_TYPES}


@pytest.mark.parametrize('arch', ARCHS)
def test_imagenet_configs_build_and_fold_to_one_deploy_layout(arch):
    deploy_shapes, train_counts = {}, {}
    for conv_type in CONV_TYPES:
        cfg = load(imagenet_config(arch, conv_type))
        assert cfg.custom_imports == dict(imports=['rep_mm'], allow_failed_imports=False)
        assert [h.type for h in cfg.custom_hooks] == ['rep_mm.ReparameterizeHook']
        assert cfg.train_cfg.max_epochs == 120 and cfg.auto_scale_lr.base_batch_size == 256
        assert cfg.train_dataloader.batch_size == 64
        backbone = cfg.model.backbone
        assert (backbone.type, backbone.conv_type) == ('rep_mm.ReparamResNet', conv_type)
        model = build(cfg.model, meta=True)
        assert model.backbone.out_channels[-1] == cfg.model.head.in_channels == ARCHS[arch]
        train_counts[conv_type] = sum(p.numel() for p in model.parameters())
        deploy_cfg = copy.deepcopy(cfg.model)
        deploy_cfg.backbone.deploy = True
        # deploy names differ by block (conv / fused_conv / dbb_reparam / orepa_reparam ...)
        deploy_shapes[conv_type] = list(shapes(build(deploy_cfg, meta=True).backbone).values())
        if (arch, conv_type) in MANIFESTS:  # official training-form names and shapes
            official = {k: s for k, s in load_manifest(MANIFESTS[arch, conv_type] + '__train')
                        if not k.startswith(('linear.', 'fc.'))}
            assert shapes(model.backbone) == official
    # every conv type folds into the same plain ResNet; the training forms are all larger
    assert all(s == deploy_shapes['base'] for s in deploy_shapes.values())
    assert all(train_counts[c] > train_counts['base'] for c in ('acb', 'dbb', 'orepa'))


def test_imagenet_schedule_and_decay_follow_the_official_script():
    cfg = load(imagenet_config('resnet18', 'orepa'))
    cfg.model.backbone.arch, cfg.model.head.in_channels = TINY, 64
    model = build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    by_id = {id(g['params'][0]): g for g in wrapper.optimizer.param_groups}
    decay = {n: by_id[id(p)]['weight_decay'] for n, p in model.named_parameters()}
    assert decay['backbone.stage1.0.conv1.weight_orepa_origin'] == 1e-4
    assert decay['backbone.stage1.0.conv1.vector'] == 1e-4  # as the official script
    assert decay['backbone.stage1.0.conv1.bn.weight'] == 0.0
    assert decay['head.fc.bias'] == 0.0 and decay['head.fc.weight'] == 1e-4
    assert all(g['lr'] == 0.1 for g in wrapper.optimizer.param_groups)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedulers = [PARAM_SCHEDULERS.build(s, default_args=dict(optimizer=optimizer,
                                                              epoch_length=1))
                  for s in cfg.param_scheduler]
    lrs = []
    for _ in range(120):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    assert lrs[0] < 1e-6 and lrs[5] == pytest.approx(0.1) and lrs[-1] < 1e-4
    assert lrs[62] == pytest.approx(0.05 * (1 + math.cos(math.pi * 57 / 115)), rel=1e-6)


def stem_lrs(model, optim_cfg, prefix):
    wrapper = build_optim_wrapper(model, optim_cfg)
    base = optim_cfg.optimizer.lr
    by_id = {id(g['params'][0]): g for g in wrapper.optimizer.param_groups}
    lrs = {n: round(by_id[id(p)]['lr'] / base, 9) for n, p in model.named_parameters()
           if p.requires_grad}
    stem = {n for n in lrs if n.startswith(prefix)}
    assert stem and all(bool(by_id[id(p)].get('stem')) == (n in stem)
                        for n, p in model.named_parameters() if p.requires_grad)
    return {lrs[n] for n in stem}, {lrs[n] for n in lrs if n not in stem}


@pytest.mark.parametrize('name,prefix', [
    ('faster_rcnn/faster-rcnn_orepa-r50_fpn_1x_coco.py', 'backbone.stage0.conv1.'),
    ('pspnet/pspnet_orepa-r50-d8_4xb2-80k_cityscapes-512x1024.py', 'backbone.stage0.conv1.')])
def test_orepa_r50_downstream_configs_train_the_stem_at_its_own_lr(name, prefix):
    cfg = load(CONFIGS / name)
    assert cfg.model.backbone.type == 'rep_mm.ReparamResNet'
    assert cfg.model.backbone.conv_type == 'orepa' and cfg.model.backbone.frozen_stages == -1
    model = revert_sync_batchnorm(build(cfg.model))
    assert isinstance(model.backbone.stage0.conv1, OREPALargeConv)
    assert model.backbone.out_channels == (256, 512, 1024, 2048)
    stem, rest = stem_lrs(model, cfg.optim_wrapper, prefix)
    assert stem == {0.1} and rest == {1.0}
    if 'pspnet' in name:
        assert model.backbone.stage4[0].conv2.dilation == 4
        randomize_bn_statistics(model, seed=1).eval()
        x = torch.randn(1, 3, 64, 64)
        report = reparameterize(model, verify=lambda m: m(x, mode='tensor'))
        assert report.max_rel_error <= 1e-5, report.summary()


STOCK = {
    'faster_rcnn/faster-rcnn_stock-r50-orepa_fpn_1x_coco.py':
        ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'backbone.conv1.'),
    'pspnet/pspnet_stock-r50-orepa-d8_4xb2-80k_cityscapes-512x1024.py':
        ('mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py', 'backbone.stem.'),
}


def tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output for t in tensors(item)]


@pytest.mark.parametrize('name', STOCK)
def test_stock_r50_trained_with_orepa_folds_into_the_stock_config(name, tmp_path):
    stock_name, stem_prefix = STOCK[name]
    torch.manual_seed(0)
    cfg = load(CONFIGS / name)
    model = revert_sync_batchnorm(build(cfg.model))
    assert type(model.backbone).__name__ in ('ResNet', 'ResNetV1c')
    assert sum(isinstance(m, (OREPA, OREPALargeConv)) for m in model.modules()) == len(
        model.backbone.rep_mm_swaps) >= 17
    stem, rest = stem_lrs(model, cfg.optim_wrapper, stem_prefix)
    assert stem == {0.1} and rest == {1.0}
    randomize_bn_statistics(model, seed=2).eval()
    x = torch.randn(1, 3, 64, 64)

    def forward(m):
        if cfg.default_scope == 'mmdet':  # FPN features and RPN maps (RoI outputs follow a
            feats = m.extract_feat(x)     # top-k proposal selection: not a continuous map)
            return tensors(feats) + tensors(m.rpn_head(feats))
        return tensors(m(x, mode='tensor'))

    with torch.no_grad():
        reference = forward(model)
    fold_to_stock(model)
    stock_file = tmp_path / 'stock.py'  # the toolbox's own config, untouched
    stock_file.write_text(f'_base_ = {stock_name!r}\n')
    stock_cfg = Config.fromfile(str(stock_file))
    stock_cfg.model.pop('pretrained', None)
    stock_cfg.model.backbone.pop('init_cfg', None)
    stock = revert_sync_batchnorm(build(stock_cfg.model))
    assert shapes(stock) == shapes(model)
    stock.load_state_dict(model.state_dict(), strict=True)
    stock.eval()
    with torch.no_grad():
        outputs = forward(stock)
    assert len(outputs) == len(reference) > 0
    for a, b in zip(reference, outputs):
        assert relative_error(a, b) <= 1e-5


# ----------------------------------------------------------------------------- digits on CPU
def digits_configs():
    return sorted((CONFIGS / 'resnet').glob('*digits*.py'))


def test_one_digits_config_per_conv_type():
    assert [p.name for p in digits_configs()] == [
        f'reparam-resnet-tiny_{c}_1xb32_digits.py' for c in ('acb', 'base', 'dbb', 'orepa')]


@pytest.mark.parametrize('path', digits_configs(), ids=lambda p: p.stem)
def test_digits_config_trains_and_tests_identically_in_deploy_form(path, data_root, tmp_path):
    from mmengine.runner import Runner
    train_tool = load_train_tool()
    args = train_tool.parse_args([
        str(path), '--work-dir', str(tmp_path), '--cfg-options', f'data_root={data_root}',
        'train_dataloader.dataset.indices=64', 'val_dataloader.dataset.indices=64',
        'test_dataloader.dataset.indices=64', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', 'default_hooks.logger.interval=1', 'log_level=WARNING'])
    cfg = train_tool.load_config(args)
    base_cfg = copy.deepcopy(cfg)
    runner = train_tool.build_runner(cfg)
    before = copy.deepcopy(runner.model.state_dict())
    with train_tool.safe_checkpoint_loading():
        runner.train()
    assert any(not torch.equal(before[k], v) for k, v in runner.model.state_dict().items()
               if v.is_floating_point())
    hook = next(h for h in runner.hooks if type(h).__name__ == 'ReparameterizeHook')
    assert hook.last_check['phase'] == 'val' and hook.last_check['max_rel_error'] <= 1e-5
    assert not runner.model.backbone.deploy
    results = {}
    for form in ('train', 'deploy'):
        test_cfg = copy.deepcopy(base_cfg)
        test_cfg.work_dir = str(tmp_path / form)
        test_cfg.load_from = str(tmp_path / 'epoch_1.pth')
        test_cfg.custom_hooks = ([dict(type='rep_mm.ReparameterizeHook', raise_on_failure=True)]
                                 if form == 'deploy' else [])
        test_runner = Runner.from_cfg(test_cfg)
        with train_tool.safe_checkpoint_loading():
            results[form] = test_runner.test()
        assert test_runner.model.backbone.deploy == (form == 'deploy')
    assert 0.0 <= results['train']['accuracy/top1'] <= 100.0
    assert results['deploy'] == results['train']
