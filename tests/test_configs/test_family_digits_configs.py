"""The digits-size (32x32, tiny arch) configs of the families that had none: RepMLPNet, RepVGGplus,
RepGhostNet, OREPA-RepVGG and RepOpt-GhostNet (hs + target). Each builds, converts exactly with
randomised BN statistics, and trains a few iterations with tools/train.py on the real digits."""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from rep_mm import reparameterize
from tests.helpers import load_train_tool, randomize_branches

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    'repmlpnet': 'repmlpnet/repmlpnet-tiny_1xb32_digits.py',
    'repvggplus': 'repvggplus/repvggplus-tiny_1xb32_digits.py',
    'repghostnet': 'repghostnet/repghostnet-tiny_1xb32_digits.py',
    'orepa-repvgg': 'orepa/orepa-repvgg-tiny_1xb32_digits.py',
    'repoptghostnet-hs': 'repopt/repoptghostnet-tiny-hs_1xb32_digits.py',
    'repoptghostnet-target': 'repopt/repoptghostnet-tiny-target_1xb32_digits.py',
}
# fused blocks of each tiny arch: RepMLPNet 5 units; RepVGGplus stem + 1 + 2 + (1 + 1) + 1;
# (RepOpt-)GhostNet 2 ghost modules per bottleneck; OREPA-RepVGG stem + [1, 2, 2, 1]
BLOCKS = {'repmlpnet': 5, 'repvggplus': 7, 'repghostnet': 8, 'orepa-repvgg': 7,
          'repoptghostnet-hs': 8, 'repoptghostnet-target': 8}
TINY = ['train_dataloader.dataset.indices=64', 'val_dataloader.dataset.indices=64',
        'test_dataloader.dataset.indices=64', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', 'default_hooks.logger.interval=1', 'log_level=WARNING']


def config_path(family: str) -> Path:
    return ROOT / 'configs' / CONFIGS[family]


def build(family: str):
    cfg = Config.fromfile(str(config_path(family)))
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize('family', CONFIGS)
def test_config_builds_classifies_32px_digits_and_converts_exactly(family):
    cfg, model = build(family)
    assert cfg.custom_imports == dict(imports=['rep_mm'], allow_failed_imports=False)
    assert cfg.model.head.num_classes == 10
    in_channels = cfg.model.head.in_channels
    last = in_channels[-1] if isinstance(in_channels, (tuple, list)) else in_channels
    assert model.backbone.out_channels[-1] == last
    randomize_branches(model, 0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x, mode='tensor').shape == (2, 10)
    report = reparameterize(model, verify=lambda m: m(x, mode='tensor'))
    assert len(report.converted) == BLOCKS[family]
    assert report.max_rel_error <= 1e-5, report.summary()


def _random_scales_file(tmp_path: Path) -> str:
    """Scales extracted (tools' extract_scales) from a Hyper-Search model of the hs config
    whose scales were drawn from ``U(0.5, 1.5)``."""
    from rep_mm.cli.extract_scales import extract_scales_file
    _, hs = build('repoptghostnet-hs')
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in hs.named_parameters():
            if name.endswith(('fusion_scale.weight', 'cheap_operation.1.weight')):
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
    torch.save({'state_dict': hs.state_dict()}, tmp_path / 'hs.pth')
    out = tmp_path / 'scales.pth'
    extract_scales_file(str(tmp_path / 'hs.pth'), str(out),
                        str(config_path('repoptghostnet-target')))
    return str(out)


@pytest.mark.parametrize('family', CONFIGS)
def test_config_trains_a_few_iterations(family, data_root, tmp_path):
    train_tool = load_train_tool()
    extra = []
    if family == 'repoptghostnet-target':
        extra = [f'optim_wrapper.scales={_random_scales_file(tmp_path)}']
    args = train_tool.parse_args([str(config_path(family)), '--work-dir', str(tmp_path / 'w'),
                                  '--cfg-options', f'data_root={data_root}', *TINY, *extra])
    cfg = train_tool.load_config(args)
    runner = train_tool.build_runner(cfg)
    before = copy.deepcopy(runner.model.state_dict())
    with train_tool.safe_checkpoint_loading():
        runner.train()
    changed = [k for k, v in runner.model.state_dict().items()
               if v.is_floating_point() and not torch.equal(before[k], v)]
    assert changed, 'no weight changed in training'
    assert (tmp_path / 'w' / 'epoch_1.pth').is_file()
    hooks = {type(h).__name__: h for h in runner.hooks}
    if 'ReparameterizeHook' in hooks:  # the validation ran on a converted copy, exactly
        check = hooks['ReparameterizeHook'].last_check
        assert check['phase'] == 'val' and check['max_rel_error'] <= 1e-5
        assert not runner.model.backbone.deploy  # training branches kept
    if family == 'repvggplus':  # the auxiliary classifiers trained too
        assert any(k.startswith('head.stage1_aux') for k in changed)
