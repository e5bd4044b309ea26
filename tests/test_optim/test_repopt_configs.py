"""The RepOpt configs for real use parse, build and train: CIFAR-100 Hyper-Search of B1, and the
ImageNet targets of RepOpt-VGG B1 / B2 / L1 / L2 and RepOpt-GhostNet-0.5x driven by their
released scales files (or, for B1, by scales extracted from the Hyper-Search model)."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS
from PIL import Image

import rep_mm  # noqa: F401  (registers the rep_mm scope)
from rep_mm.cli.extract_scales import extract_scales_file
from rep_mm.optim import RepOptSGD

from ..conftest import reference_path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'repopt'
HS_B1 = CONFIGS / 'repoptvgg-b1-hs_8xb32_cifar100.py'
TARGET_B1 = CONFIGS / 'repoptvgg-b1-target_8xb32_in1k.py'
B1_BLOCKS = 1 + 4 + 6 + 16 + 1
L_BLOCKS = 1 + 8 + 14 + 24 + 1

# (config, released scales file, arch, kernels driven by the scales, input width of the head,
#  a multiplied kernel to check the update of, a plain parameter to check the update of)
VGG_KERNEL = 'backbone.stage1.1.conv.weight'  # an identity block: all three branches
GHOST_KERNEL = 'backbone.blocks.3.0.ghost1.cheap_operation.0.weight'  # its 3x3 depthwise conv
TARGETS = [
    pytest.param('repoptvgg-b1-target_8xb32_in1k.py', 'RepOpt-VGG-B1-scales.pth', 'B1',
                 B1_BLOCKS, 2048, VGG_KERNEL, 'head.fc.weight', id='B1'),
    pytest.param('repoptvgg-b2-target_8xb32_in1k.py', 'RepOpt-VGG-B2-scales.pth', 'B2',
                 B1_BLOCKS, 2560, VGG_KERNEL, 'head.fc.weight', id='B2'),
    pytest.param('repoptvgg-l1-target_8xb32_in1k.py', 'RepOpt-VGG-L1-scales.pth', 'L1',
                 L_BLOCKS, 2048, VGG_KERNEL, 'head.fc.weight', id='L1'),
    pytest.param('repoptvgg-l2-target_8xb32_in1k.py', 'RepOpt-VGG-L2-scales.pth', 'L2',
                 L_BLOCKS, 2560, VGG_KERNEL, 'head.fc.weight', id='L2'),
    pytest.param('repoptghostnet-0.5x-target_8xb128_in1k.py', 'RepOptGhostNet_0_5x_scales.pth',
                 '0.5x', 32, 480, GHOST_KERNEL, 'head.layers.0.fc.weight', id='GhostNet-0.5x'),
]


def build(config):
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


def test_cifar100_hyper_search_config_builds_and_its_scales_fit_b1(tmp_path):
    cfg, model = build(HS_B1)
    assert model.backbone.mode == 'hs' and cfg.train_dataloader.dataset.type == 'CIFAR100'
    # mmpretrain's CIFAR-100 takes every argument of the config (lazy: nothing read or fetched)
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, lazy_init=True,
                                  data_root=str(tmp_path / 'cifar100')))
    assert type(dataset).__name__ == 'CIFAR100' and len(dataset.pipeline.transforms) == 4
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 256
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32), mode='tensor').shape == (1, 100)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    scale = model.backbone.stage1[1].scale_identity.weight
    assert scale.requires_grad and decay[id(scale)] == 0.0  # the searched scales are not decayed
    assert decay[id(model.backbone.stage1[1].conv.weight)] == 4e-5
    # a Hyper-Search checkpoint of this model -> a scales file for the ImageNet target, whose
    # names are exactly those of the released RepOpt-VGG-B1 scales
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'hs.pth')
    summary = extract_scales_file(str(tmp_path / 'hs.pth'), str(tmp_path / 'scales.pth'),
                                  str(TARGET_B1))
    released = torch.load(reference_path('repopt_scales', 'RepOpt-VGG-B1-scales.pth'),
                          weights_only=True)
    assert set(summary['keys']) == set(released) and summary['num_blocks'] == B1_BLOCKS
    extracted = torch.load(tmp_path / 'scales.pth', weights_only=True)
    assert all(extracted[k].shape == released[k].shape for k in released)


class FirstStepProbe(Hook):
    """Records, for the watched parameters, the value and gradient just before the first
    optimizer step (a step pre-hook, so after RepOptInitHook's re-initialisation) and the
    value after it; and the loss of every iteration."""

    priority = 'LOWEST'

    def __init__(self, names):
        self.names, self.before, self.after, self.group, self.losses = names, {}, {}, {}, []

    def before_train(self, runner):
        params = dict(runner.model.named_parameters())
        self.params = {name: params[name] for name in self.names}
        runner.optim_wrapper.optimizer.register_step_pre_hook(self._record)

    def _record(self, optimizer, args, kwargs):
        if self.before:
            return
        for name, param in self.params.items():
            self.before[name] = (param.detach().clone(), param.grad.detach().clone())
            self.group[name] = next(g for g in optimizer.param_groups
                                    if any(q is param for q in g['params']))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(outputs['loss'].item())
        if batch_idx == 0:
            self.after = {name: p.detach().clone() for name, p in self.params.items()}


def sgd_mults(scales, kernel_name, kernel):
    """RepOptimizer's grad mults for SGD (power 2) of one target kernel, from the paper's rule:
    VGG ``s_conv^2`` on every tap, ``+ s_1x1^2`` on the centre, ``+ 1`` on the identity's
    diagonal centre; GhostNet (depthwise) ``s^2`` on every tap, ``+ 1`` on the centre."""
    mult = torch.ones_like(kernel, dtype=torch.float64)
    centre = kernel.shape[-1] // 2
    name = kernel_name[len('backbone.'):]
    if '.cheap_operation.' in name:
        s = scales[name.replace('cheap_operation.0.weight', 'cheap_operation.1.weight')].double()
        mult *= (s ** 2).view(-1, 1, 1, 1)
        mult[:, 0, centre, centre] += 1
        return mult
    block = name[:-len('conv.weight')]
    mult *= (scales[block + 'scale_conv.weight'].double() ** 2).view(-1, 1, 1, 1)
    mult[:, :, centre, centre] += (scales[block + 'scale_1x1.weight'].double() ** 2).view(-1, 1)
    if block + 'scale_identity.weight' in scales:
        channels = torch.arange(kernel.shape[0])
        mult[channels, channels, centre, centre] += 1
    return mult


def first_sgd_step(param, grad, mult, group):
    """torch SGD's first step (momentum buffer = d_p) on the multiplied gradient, in float64."""
    p, g = param.double(), grad.double()
    d_p = g * mult + group['weight_decay'] * p
    if group['momentum'] != 0:
        d_p = d_p * (1 + group['momentum']) if group['nesterov'] else d_p
    return p - group['lr'] * d_p


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """Four real image files (80x80 RGB PNG) in two class folders, for the configs' pipelines."""
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for index in range(4):
        folder = root / f'class{index % 2}'
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f'{index}.png')
    return str(root)


@pytest.mark.parametrize('config,scales_file,arch,blocks,width,kernel_name,plain_name', TARGETS)
def test_imagenet_target_config_trains_from_the_released_scales(
        tmp_path, image_folder, config, scales_file, arch, blocks, width, kernel_name,
        plain_name):
    cfg = Config.fromfile(str(CONFIGS / config))
    assert cfg.model.backbone.arch == arch and cfg.model.backbone.mode == 'target'
    assert cfg.model.head.in_channels == width
    assert cfg.optim_wrapper.scales == scales_file  # names its released file
    assert [h['type'] for h in cfg.custom_hooks] == ['rep_mm.RepOptInitHook',
                                                     'rep_mm.ReparameterizeHook']
    scales_path = str(reference_path('repopt_scales', scales_file))
    # the config's test pipeline gives 224x224 inputs
    init_default_scope(cfg.default_scope)
    val = DATASETS.build(dict(type='CustomDataset', data_root=image_folder,
                              pipeline=cfg.val_dataloader.dataset.pipeline))
    assert val[0]['inputs'].shape == (3, 224, 224)
    # the config's own training pipeline, on 64x64 crops of 4 image files, batch 2
    pipeline = [dict(t, scale=64) if t['type'] == 'RandomResizedCrop' else t
                for t in cfg.train_dataloader.dataset.pipeline]
    loader = dict(cfg.train_dataloader, batch_size=2, num_workers=0,
                  dataset=dict(type='CustomDataset', data_root=image_folder, pipeline=pipeline),
                  sampler=dict(type='DefaultSampler', shuffle=False))
    probe = FirstStepProbe([kernel_name, plain_name])
    runner = Runner(
        model=cfg.model, data_preprocessor=cfg.data_preprocessor,
        work_dir=str(tmp_path), experiment_name=f'repopt-{tmp_path.name}',
        train_dataloader=loader, train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(cfg.optim_wrapper, scales=scales_path),
        # no lr schedule: the configs' warmup starts at lr * 1e-6 (or 1.7e-4), a first step
        # too small to tell the grad mults apart in float32
        param_scheduler=None,
        default_hooks=dict(cfg.default_hooks, checkpoint=None),  # no 0.2-1.4 GB checkpoints
        custom_hooks=list(cfg.custom_hooks) + [probe],
        default_scope=cfg.default_scope, env_cfg=cfg.env_cfg, randomness=cfg.randomness,
        log_level='WARNING')
    runner.train()

    optimizer = runner.optim_wrapper.optimizer
    assert isinstance(optimizer, RepOptSGD) and len(optimizer.grad_mult_map) == blocks
    assert len(probe.losses) == 2 and all(math.isfinite(loss) for loss in probe.losses)
    scales = torch.load(scales_path, weights_only=True)
    for name in (kernel_name, plain_name):
        param, grad = probe.before[name]
        group = probe.group[name]
        assert group['lr'] == cfg.optim_wrapper.optimizer.lr
        mult = sgd_mults(scales, name, param) if name == kernel_name else \
            torch.ones_like(param, dtype=torch.float64)
        expected = first_sgd_step(param, grad, mult, group)
        after = probe.after[name].double()
        tolerance = 4 * torch.finfo(torch.float32).eps * param.abs().max().item()
        assert (after - expected).abs().max().item() <= tolerance, name
        assert (after - param.double()).abs().max().item() > 100 * tolerance, name  # it moved
        if name == kernel_name:
            # the grad mults matter: plain SGD would have moved the kernel elsewhere
            plain = first_sgd_step(param, grad, torch.ones_like(mult), group)
            assert (after - plain).abs().max().item() > 100 * tolerance
            assert group['weight_decay'] == cfg.optim_wrapper.optimizer.weight_decay
