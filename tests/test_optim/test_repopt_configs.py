"""The RepOpt configs for real use parse and build (no data needed): CIFAR-100 Hyper-Search of
B1, and the ImageNet target of B1 driven by the released scales or by extracted ones."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.registry import DATASETS

import rep_mm  # noqa: F401  (registers the rep_mm scope)
from rep_mm.extract_scales import extract_scales_file
from rep_mm.optim import RepOptSGD

from ..conftest import reference_path

REPO = Path(__file__).resolve().parents[2]
HS_B1 = REPO / 'configs' / 'repopt' / 'repoptvgg-b1-hs_8xb32_cifar100.py'
TARGET_B1 = REPO / 'configs' / 'repopt' / 'repoptvgg-b1-target_8xb32_in1k.py'
B1_BLOCKS = 1 + 4 + 6 + 16 + 1


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


def test_imagenet_target_config_trains_from_the_released_scales():
    cfg, model = build(TARGET_B1)
    assert model.backbone.mode == 'target'
    cfg.optim_wrapper.scales = str(reference_path('repopt_scales', 'RepOpt-VGG-B1-scales.pth'))
    from rep_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
    wrapper_cfg = cfg.optim_wrapper.copy()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=wrapper_cfg.pop('constructor'), optim_wrapper_cfg=wrapper_cfg))
    wrapper = constructor(model)
    assert isinstance(wrapper.optimizer, RepOptSGD)
    assert len(wrapper.optimizer.grad_mult_map) == B1_BLOCKS
    assert [h['type'] for h in cfg.custom_hooks] == ['rep_mm.RepOptInitHook',
                                                     'rep_mm.ReparameterizeHook']
