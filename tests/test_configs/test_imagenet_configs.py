"""The ImageNet configs of RepVGG / RepVGGplus: they load, build, count the official parameters,
run forward + loss, and their schedules and pipelines do what the official recipes say."""
import math
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope
from mmpretrain.registry import MODELS, TRANSFORMS
from mmpretrain.structures import DataSample

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from tests.conftest import load_manifest

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'
ARCHS = ('A0', 'A1', 'A2', 'B0', 'B1', 'B1g2', 'B1g4', 'B2', 'B2g2', 'B2g4', 'B3', 'B3g2',
         'B3g4', 'D2se')
# deploy-form parameter counts incl. the 1000-class linear layer, counted here. The paper /
# README numbers are these truncated to 2 decimals (A0 8.30M = 8,309,384). B2g2 and B3g2 are not
# in the paper; D2se's official "133.33M" is its training form (see TRAIN_PARAMS).
DEPLOY_PARAMS = {
    'A0': 8_309_384, 'A1': 12_789_864, 'A2': 25_499_944, 'B0': 14_339_048, 'B1': 51_829_480,
    'B1g2': 41_360_104, 'B1g4': 36_125_416, 'B2': 80_315_112, 'B2g2': 63_956_712,
    'B2g4': 55_777_512, 'B3': 110_960_872, 'B3g2': 87_404_776, 'B3g4': 75_626_728,
    'D2se': 120_387_572, 'L2pse': 127_151_960,
}
OFFICIAL_DEPLOY_MILLIONS = {
    'A0': 8.30, 'A1': 12.78, 'A2': 25.49, 'B0': 14.33, 'B1': 51.82, 'B1g2': 41.36, 'B1g4': 36.12,
    'B2': 80.31, 'B2g4': 55.77, 'B3': 110.96, 'B3g4': 75.62,
}
TRAIN_PARAMS = {'A0': 9_108_968, 'D2se': 133_334_836, 'L2pse': 146_062_864}
MANIFESTS = {'A0': 'RepVGG-A0', 'B1g2': 'RepVGG-B1g2', 'D2se': 'RepVGG-D2se',
             'L2pse': 'RepVGGplus-L2pse'}
STRONG_RECIPE = {'B2g4', 'B3', 'B3g2', 'B3g4', 'D2se'}


def config_path(arch: str) -> Path:
    if arch == 'L2pse':
        return CONFIG_DIR / 'repvggplus' / 'repvggplus-L2pse_8xb32_in1k.py'
    return CONFIG_DIR / 'repvgg' / f'repvgg-{arch}_8xb32_in1k.py'


def load(path) -> Config:
    init_default_scope('mmpretrain')
    return Config.fromfile(str(path))


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def state_dict_params(manifest) -> int:
    return sum(math.prod(shape) for key, shape in manifest
               if 'running_' not in key and 'num_batches_tracked' not in key)


def build_model(cfg: Config, model_cfg=None):
    """Build ``cfg.model`` as the Runner does (top-level ``data_preprocessor`` merged in)."""
    model_cfg = (model_cfg or cfg.model).copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return MODELS.build(model_cfg)


def build_on_meta(cfg: Config, model_cfg=None):
    """Build through mmpretrain's registry without allocating memory (shapes only)."""
    with torch.device('meta'):
        return build_model(cfg, model_cfg)


def tiny(cfg: Config) -> Config:
    """The same config with a tiny arch of the same family (for real numeric checks)."""
    if cfg.model.backbone.type == 'rep_mm.RepVGGplus':
        cfg.model.backbone.arch = dict(num_blocks=(1, 2, 2, 1),
                                       width_factor=(0.125, 0.125, 0.0625, 0.0625))
        cfg.model.head.in_channels = (8, 16, 16, 32)
    else:
        cfg.model.backbone.arch = dict(num_blocks=(1, 2, 2, 1),
                                       width_factor=(0.125, 0.125, 0.125, 0.125))
        cfg.model.head.in_channels = 64
    return cfg


def test_every_arch_has_a_config():
    found = sorted(p.name for p in (CONFIG_DIR / 'repvgg').glob('*_8xb32_in1k.py'))
    assert found == sorted(f'repvgg-{arch}_8xb32_in1k.py' for arch in ARCHS)


@pytest.mark.parametrize('arch', ARCHS + ('L2pse', ))
def test_config_loads_builds_and_counts_official_parameters(arch):
    cfg = load(config_path(arch))
    assert cfg.custom_imports == dict(imports=['rep_mm'], allow_failed_imports=False)
    assert [h.type for h in cfg.custom_hooks] == ['rep_mm.ReparameterizeHook']
    assert cfg.model.backbone.type == ('rep_mm.RepVGGplus' if arch == 'L2pse' else 'rep_mm.RepVGG')
    assert cfg.model.backbone.arch == arch
    assert cfg.model.backbone.type in cfg.pretty_text  # the Runner dumps it to work_dir
    assert cfg.auto_scale_lr.base_batch_size == 256 == 8 * cfg.train_dataloader.batch_size
    max_epochs = {True: 200, False: 120}[arch in STRONG_RECIPE] if arch != 'L2pse' else 300
    assert cfg.train_cfg.max_epochs == max_epochs

    model = build_on_meta(cfg)
    assert type(model.backbone).__name__ == ('RepVGGplus' if arch == 'L2pse' else 'RepVGG')
    if arch in TRAIN_PARAMS:
        assert num_params(model) == TRAIN_PARAMS[arch]
    deploy_cfg = cfg.model.copy()
    deploy_cfg.backbone.deploy = True
    if arch == 'L2pse':
        deploy_cfg.head.deploy = True
    deployed = build_on_meta(cfg, deploy_cfg)
    count = num_params(deployed)
    assert count == DEPLOY_PARAMS[arch]
    if arch in OFFICIAL_DEPLOY_MILLIONS:  # the paper truncates to 2 decimals
        assert math.floor(count / 1e4) / 100 == pytest.approx(OFFICIAL_DEPLOY_MILLIONS[arch])
    if arch in MANIFESTS:  # exactly the official state_dicts, training and deploy form
        assert num_params(model) == state_dict_params(load_manifest(f'{MANIFESTS[arch]}__train'))
        assert count == state_dict_params(load_manifest(f'{MANIFESTS[arch]}__deploy'))


def test_official_training_form_counts_of_d2se_match_the_readme():
    # the official "133.33M" of RepVGG-D2se is the training-form model (SE + all branches)
    assert math.floor(TRAIN_PARAMS['D2se'] / 1e4) / 100 == pytest.approx(133.33)


@pytest.mark.parametrize('name', ['repvgg/repvgg-A0_deploy_in1k.py',
                                  'repvggplus/repvggplus-L2pse_deploy_in1k.py'])
def test_deploy_configs_build_the_fused_form(name):
    cfg = load(CONFIG_DIR / name)
    assert cfg.custom_hooks == []
    model = build_on_meta(cfg)
    arch = 'L2pse' if 'L2pse' in name else 'A0'
    assert num_params(model) == DEPLOY_PARAMS[arch]
    manifest = {k for k, _ in load_manifest(f'{MANIFESTS[arch]}__deploy')}
    head_prefixes = ('linear.', 'head.', 'fc.')
    expected = {(f'head.fc.{k.split(".", 1)[1]}' if arch == 'A0' else f'head.{k}')
                if k.startswith(head_prefixes) else f'backbone.{k}' for k in manifest}
    assert set(model.state_dict()) == expected


def packed_batch(num_images: int, size: int, labels):
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
              for _ in range(num_images)]
    samples = [DataSample().set_gt_label(label) for label in labels]
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('arch', ['A0', 'L2pse'])
def test_forward_and_loss_run_on_the_real_model(arch):
    torch.manual_seed(0)
    cfg = load(config_path(arch))
    model = build_model(cfg)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed_batch(1, 64, [5]), training=False)
        logits = model(data['inputs'], mode='tensor')
        predictions = model(data['inputs'], data['data_samples'], mode='predict')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert predictions[0].pred_score.shape == (1000, )
    assert predictions[0].pred_label.item() == logits.argmax().item()

    model.train()
    with torch.no_grad():
        data = model.data_preprocessor(packed_batch(2, 64, [3, 999]), training=True)
        losses = model(data['inputs'], data['data_samples'], mode='loss')
    expected_keys = {'loss'}
    if arch == 'L2pse':
        expected_keys |= {'loss_aux_stage1', 'loss_aux_stage2', 'loss_aux_stage3_first'}
        # mixup + label smoothing: soft targets reach the head
        assert data['data_samples'][0].gt_score.shape == (1000, )
    assert set(losses) == expected_keys
    for value in losses.values():
        assert torch.isfinite(value) and value.item() > 0
    if arch == 'L2pse':  # each auxiliary term is 0.1 * a CE-sized loss (CE at init ~ ln 1000)
        for key in expected_keys - {'loss'}:
            assert 0.1 * 0.5 * math.log(1000) < losses[key].item() < 0.1 * 3 * math.log(1000)


def weight_decays(model, optim_wrapper_cfg):
    wrapper = build_optim_wrapper(model, optim_wrapper_cfg)
    by_param = {}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            by_param[id(param)] = group['weight_decay']
    return {name: by_param[id(p)] for name, p in model.named_parameters()}, wrapper


def test_repvgg_schedule_weight_decay_follows_the_official_rules():
    cfg = tiny(load(config_path('A0')))
    model = build_model(cfg)
    decays, wrapper = weight_decays(model, cfg.optim_wrapper)
    optimizer = wrapper.optimizer
    assert type(optimizer).__name__ == 'SGD'
    assert optimizer.defaults['lr'] == 0.1 and optimizer.defaults['momentum'] == 0.9
    checks = {
        'backbone.stage2.1.rbr_identity.weight': 1e-4,  # decays (official choice)
        'backbone.stage2.1.rbr_identity.bias': 0.0,
        'backbone.stage2.1.rbr_dense.conv.weight': 1e-4,
        'backbone.stage2.1.rbr_dense.bn.weight': 0.0,
        'backbone.stage2.1.rbr_dense.bn.bias': 0.0,
        'backbone.stage2.1.rbr_1x1.bn.weight': 0.0,
        'backbone.stage2.1.rbr_1x1.conv.weight': 1e-4,
        'head.fc.weight': 1e-4,
        'head.fc.bias': 0.0,
    }
    for name, decay in checks.items():
        assert decays[name] == pytest.approx(decay), name
    # every parameter is covered by one of the rules
    for name, decay in decays.items():
        no_decay = name.endswith('bias') or '.bn.' in name
        assert decay == pytest.approx(0.0 if no_decay else 1e-4), name


def test_repvggplus_schedule_weight_decay_follows_the_official_rules():
    cfg = tiny(load(config_path('L2pse')))
    model = build_model(cfg)
    decays, wrapper = weight_decays(model, cfg.optim_wrapper)
    assert wrapper.optimizer.defaults['nesterov'] is True
    for name, param in model.named_parameters():
        if name.endswith('rbr_identity.weight'):
            expected = 4e-5
        elif param.ndim == 1:  # every other BN weight / bias, every bias
            expected = 0.0
        else:
            expected = 4e-5
        assert decays[name] == pytest.approx(expected), name
    assert any(name.endswith('rbr_identity.weight') for name in decays)
    assert decays['head.stage1_aux.0.conv.weight'] == pytest.approx(4e-5)
    assert decays['head.stage1_aux.0.bn.weight'] == 0.0


@pytest.mark.parametrize('arch,max_epochs', [('A0', 120), ('B3', 200), ('L2pse', 300)])
def test_learning_rate_warms_up_for_5_epochs_then_decays_to_zero(arch, max_epochs):
    cfg = load(config_path(arch))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedulers = [PARAM_SCHEDULERS.build(s, default_args=dict(optimizer=optimizer, epoch_length=1))
                  for s in cfg.param_scheduler]
    lrs = []
    for _ in range(max_epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    assert lrs[0] < 1e-6
    assert lrs[5] == pytest.approx(0.1)
    assert max(lrs) == pytest.approx(0.1)
    half = 5 + (max_epochs - 5) // 2  # cosine: half of the peak in the middle of the decay
    assert lrs[half] == pytest.approx(0.05 * (1 + math.cos(math.pi * (half - 5) /
                                                           (max_epochs - 5))), rel=1e-6)
    assert lrs[-1] < 1e-4 and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


@pytest.mark.parametrize('arch,train_size,test_size', [
    ('A0', 224, 224), ('B3', 224, 224), ('D2se', 224, 320), ('L2pse', 256, 320)])
def test_pipelines_produce_the_official_resolutions(tmp_path, arch, train_size, test_size):
    cfg = load(config_path(arch))
    image = tmp_path / 'image.png'
    rng = np.random.default_rng(0)
    mmcv.imwrite(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), str(image))
    for pipeline_cfg, size in ((cfg.train_dataloader.dataset.pipeline, train_size),
                               (cfg.test_dataloader.dataset.pipeline, test_size)):
        transforms = [TRANSFORMS.build(t) for t in pipeline_cfg]
        for _ in range(5):  # random augmentations: a few draws
            results = dict(img_path=str(image), gt_label=1)
            for transform in transforms:
                results = transform(results)
            assert tuple(results['inputs'].shape) == (3, size, size)
            assert results['inputs'].dtype == torch.uint8
    train_types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert ('AutoAugment' in train_types) == (arch in STRONG_RECIPE)
    assert ('RandAugment' in train_types) == (arch == 'L2pse')
