"""Hyper-Search -> scales file -> target training on real digits, as a user runs it.

The hs config trains with ``tools/train.py`` (a subprocess, 4 iterations on 32 images), its
checkpoint goes through ``tools/extract_scales.py``, and the target config trains from the
extracted file in a Runner whose RepOptInitHook re-initialises the plain VGG (checked against
the rule of initialisation recomputed from the recorded kernels and RNG state).
"""
import hashlib
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

import rep_mm  # noqa: F401  (registers the rep_mm scope)
from rep_mm.cli.dispatch import main as cli_main
from rep_mm.backbones import RepOptVGG
from rep_mm.blocks.csla import RepOptVGGBlock
from rep_mm.io import load_checkpoint_file
from rep_mm.demo.common import build_runner
from rep_mm.optim import RepOptSGD, build_handler

from ..helpers import run_python

REPO = Path(__file__).resolve().parents[2]
HS_CONFIG = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-hs_1xb32_digits.py'
TARGET_CONFIG = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'
TINY = ['train_dataloader.dataset.indices=32', 'val_dataloader.dataset.indices=32',
        'test_dataloader.dataset.indices=32', 'default_hooks.logger.interval=1']
# the tiny digits arch: stem 3->32, stage1 32 (s2), stage2 64 (s2) + 64, stage3 128 (s2) + 128,
# stage4 256 (s2): 7 blocks, two with an identity branch -> 7 * 2 + 2 scales
NUM_BLOCKS, NUM_SCALES = 7, 16


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def hs_checkpoint(tmp_path_factory, data_root):
    work_dir = tmp_path_factory.mktemp('hs')
    result = run_python([REPO / 'tools' / 'train.py', HS_CONFIG, '--work-dir', work_dir,
                  '--cfg-options', f'data_root={data_root}', *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Epoch(train) [4][1/1]' in result.stdout + result.stderr
    return work_dir / 'epoch_4.pth'


@pytest.fixture(scope='module')
def scales_file(tmp_path_factory, hs_checkpoint):
    out = tmp_path_factory.mktemp('scales') / 'scales.pth'
    result = run_python([REPO / 'tools' / 'extract_scales.py', hs_checkpoint, out,
                  '--config', TARGET_CONFIG])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'wrote {NUM_SCALES} scales of {NUM_BLOCKS} blocks' in result.stdout
    return out


def target_backbone() -> RepOptVGG:
    cfg = Config.fromfile(str(TARGET_CONFIG)).model.backbone
    return RepOptVGG(cfg.arch, mode='target', strides=cfg.strides)


def test_extracted_scales_match_the_target_by_name(hs_checkpoint, scales_file):
    scales = torch.load(scales_file, map_location='cpu', weights_only=True)
    backbone = target_backbone()
    expected = [(f'{name}.{scale}', (block.out_channels,))
                for name, block in backbone.named_modules() if isinstance(block, RepOptVGGBlock)
                for scale in block.scale_names()]
    assert [(k, tuple(v.shape)) for k, v in scales.items()] == expected
    assert len(expected) == NUM_SCALES
    assert all(v.dtype == torch.float32 for v in scales.values())
    hs_state = load_checkpoint_file(hs_checkpoint)['state_dict']
    for key, value in scales.items():
        assert torch.equal(value, hs_state[f'backbone.{key}']), key
    # the search moved the scales away from their init (1.0)
    assert max((v - 1).abs().max().item() for v in scales.values()) > 1e-4
    build_handler(backbone, str(scales_file))  # a clean fit: no ScalesError


def test_extract_refuses_its_input_and_existing_outputs(tmp_path, hs_checkpoint, scales_file,
                                                        capsys):
    before = sha256(hs_checkpoint)
    assert cli_main(['extract-scales', str(hs_checkpoint), str(hs_checkpoint),
                     '--config', str(TARGET_CONFIG), '--overwrite']) == 2
    assert 'same file as the input' in capsys.readouterr().err
    assert sha256(hs_checkpoint) == before
    assert cli_main(['extract-scales', str(hs_checkpoint), str(scales_file),
                     '--config', str(TARGET_CONFIG)]) == 2
    assert 'exists; pass --overwrite' in capsys.readouterr().err
    # a target of another arch: the names that do not fit are reported, nothing is written
    other = tmp_path / 'other.py'
    other.write_text(f"_base_ = '{TARGET_CONFIG}'\n"
                     "model = dict(backbone=dict(arch=dict(num_blocks=[1, 2, 3, 1], "
                     "width_factor=[0.5, 0.5, 0.5, 0.5])))\n")
    out = tmp_path / 'never.pth'
    assert cli_main(['extract-scales', str(hs_checkpoint), str(out), '--config',
                     str(other)]) == 2
    err = capsys.readouterr().err
    assert 'missing key(s): stage3.2.scale_1x1.weight' in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


class Recorder(Hook):
    """Records the backbone state (and the RNG state) at before_train."""

    def __init__(self, store):
        self.store = store

    def before_train(self, runner):
        self.store.append(dict(
            state={k: v.clone() for k, v in runner.model.backbone.state_dict().items()},
            rng=torch.get_rng_state()))


def test_target_trains_from_the_scales_after_the_rule_of_initialisation(
        tmp_path, data_root, scales_file):
    cfg = Config.fromfile(str(TARGET_CONFIG))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root
        cfg[key].dataset.indices = 32
    cfg.work_dir, cfg.launcher, cfg.log_level = str(tmp_path), 'none', 'WARNING'
    cfg.optim_wrapper.scales = str(scales_file)
    cfg.train_cfg.max_epochs = 2
    runner = build_runner(cfg, 'test_hs_flow_target')
    store = []
    runner.register_hook(Recorder(store), 'HIGHEST')   # before RepOptInitHook (VERY_HIGH)
    runner.register_hook(Recorder(store), 'LOWEST')    # after it
    runner.train()
    before, after = store
    assert isinstance(runner.optim_wrapper.optimizer, RepOptSGD)
    assert len(runner.optim_wrapper.optimizer.grad_mult_map) == NUM_BLOCKS

    # the rule of initialisation, recomputed on a fresh model from the recorded kernels/RNG
    fresh = target_backbone()
    fresh.load_state_dict(before['state'])
    torch.set_rng_state(before['rng'])
    build_handler(fresh, str(scales_file)).reinitialize()
    scales = torch.load(scales_file, weights_only=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(after['state'][key], value), key
        if key.endswith('conv.weight'):
            # independent of the handler: off-centre taps are W * s_conv
            s_conv = scales[key.replace('conv.weight', 'scale_conv.weight')].view(-1, 1, 1)
            assert torch.equal(after['state'][key][:, :, 0], before['state'][key][:, :, 0]
                               * s_conv), key
            assert not torch.equal(after['state'][key], before['state'][key]), key
    trained = runner.model.backbone.stage2[1].conv.weight.detach()
    assert (trained - after['state']['stage2.1.conv.weight']).abs().max() > 1e-5


def test_repopt_demo_quick(tmp_path):
    from rep_mm.demo import repopt as demo_repopt
    assert demo_repopt.main(['--work-dir', str(tmp_path), '--quick']) == 0
    import json
    summary = json.loads((tmp_path / demo_repopt.SUMMARY_NAME).read_text())
    assert summary['ok'] is True and summary['quick'] is True
    for key in ('hs_top1', 'target_top1'):
        assert 0.0 <= summary[key] <= 100.0
    assert summary['hs']['iterations'] == summary['target']['iterations'] == 8
    assert summary['num_scales'] == NUM_SCALES and summary['num_blocks'] == NUM_BLOCKS
    assert summary['target_optimizer'] == 'RepOptSGD'
    assert summary['multiplied_kernels'] == NUM_BLOCKS
    assert set(summary['scale_statistics']) == {'scale_conv', 'scale_1x1', 'scale_identity'}
    scales = torch.load(summary['scales_file'], weights_only=True)
    assert len(scales) == NUM_SCALES
