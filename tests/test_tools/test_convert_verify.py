"""End-to-end tests of ``rep-mm convert`` / ``rep-mm verify`` (and tools/convert.py, verify.py).

Each test writes a real mm config (mmpretrain classifier or mmseg segmentor with a tiny rep_mm
RepVGG), saves a training-form checkpoint with randomised BN statistics, runs the real command
and checks the files and numbers it produces.
"""
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from mmengine.logging import MessageHub
from torch import nn

from rep_mm.backbones import RepVGG
from rep_mm.io import load_weights
from rep_mm.reparam import max_errors
from rep_mm.cli.dispatch import build_config_model, main
from rep_mm.verify.bn_statistics import randomize_bn_statistics
from tests.conftest import load_manifest, relative_error

REPO = Path(__file__).resolve().parents[2]
TINY = "dict(num_blocks=[1, 2, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.5])"
CLS_CONFIG = f"""
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepVGG', arch={TINY}, deploy=DEPLOY),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=5, in_channels=256))
"""
SEG_CONFIG = f"""
custom_imports = dict(imports=['rep_mm', 'mmseg.models'], allow_failed_imports=False)
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    backbone=dict(type='rep_mm.RepVGG', arch={TINY}, deploy=DEPLOY, out_indices=(1, 3),
                  strides=(2, 2, 2, 1, 1), dilations=(1, 1, 1, 2, 4)),
    decode_head=dict(type='FCNHead', in_channels=256, in_index=1, channels=16, num_convs=1,
                     num_classes=4, norm_cfg=dict(type='BN'), align_corners=False),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
"""
DET_CONFIG = f"""
custom_imports = dict(imports=['rep_mm', 'mmdet.models'], allow_failed_imports=False)
default_scope = 'mmdet'
model = dict(
    type='RetinaNet',
    backbone=dict(type='rep_mm.RepVGG', arch={TINY}, deploy=DEPLOY, out_indices=(1, 2, 3)),
    neck=dict(type='FPN', in_channels=[32, 64, 256], out_channels=16, start_level=0,
              add_extra_convs='on_input', num_outs=3),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                              ratios=[1.0], strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=[1.0] * 4),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25),
        loss_bbox=dict(type='L1Loss')),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
"""


def write_config(tmp_path, template, deploy=False, name='cfg'):
    path = tmp_path / f'{name}{"_deploy" if deploy else ""}.py'
    path.write_text(template.replace('DEPLOY', str(deploy)))
    return str(path)


def build(tmp_path, config_text, deploy=False):
    """The model of a config, through mmengine's Config and the registries (as the CLI does)."""
    return build_config_model(write_config(tmp_path, config_text, deploy, name='built'))[0].eval()


def save_training_checkpoint(tmp_path, config_text, seed=0, name='train.pth'):
    """A trained-looking checkpoint: random weights and BN statistics, a MessageHub in meta."""
    torch.manual_seed(seed)
    model = randomize_bn_statistics(build(tmp_path, config_text), seed=seed)
    hub = MessageHub.get_instance(f'rep_mm_test_{seed}_{name}')
    hub.update_scalar('train/loss', 0.5)
    path = tmp_path / name
    torch.save({'meta': {'epoch': 3, 'seed': seed}, 'state_dict': model.state_dict(),
                'message_hub': hub.state_dict()}, path)
    return str(path), model


def outputs(model, x):
    with torch.no_grad():
        return model(x, mode='tensor')


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize('template,shape', [(CLS_CONFIG, (2, 3, 48, 40)),
                                            (SEG_CONFIG, (1, 3, 64, 64)),
                                            (DET_CONFIG, (1, 3, 64, 96))],
                         ids=['mmpretrain_classifier', 'mmseg_encoder_decoder', 'mmdet_retinanet'])
def test_convert_then_verify_then_load_deploy_checkpoint(tmp_path, capsys, template, shape):
    config = write_config(tmp_path, template)
    ckpt, trained = save_training_checkpoint(tmp_path, template)
    out = tmp_path / 'deploy' / 'model_deploy.pth'
    shape_arg = 'x'.join(map(str, shape))
    assert main(['convert', config, ckpt, str(out), '--shape', shape_arg]) == 0
    printed = capsys.readouterr().out
    assert 'PASS' in printed and 'parameters:' in printed and str(out) in printed

    saved = torch.load(out, weights_only=True)
    keys = list(saved['state_dict'])
    assert any('backbone.stage0.rbr_reparam.weight' == k for k in keys)
    assert not any('rbr_dense' in k or 'rbr_1x1' in k or 'rbr_identity' in k for k in keys)
    meta = saved['meta']
    assert meta['deploy'] is True and meta['input_shape'] == list(shape)
    assert meta['max_rel_error'] <= 1e-5 and meta['params_after'] < meta['params_before']
    assert meta['source_checkpoint'] == os.path.abspath(ckpt)

    assert main(['verify', config, ckpt, '--shape', shape_arg]) == 0
    assert 'PASS' in capsys.readouterr().out
    assert main(['verify', config, ckpt, '--shape', shape_arg, '--deploy-checkpoint',
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'PASS' in printed and 'max rel error' in printed

    deployed = build(tmp_path, template, deploy=True)
    report = load_weights(deployed, str(out), strict=True)
    assert report.ok and len(report.loaded) == len(keys)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    max_abs, max_rel = max_errors(outputs(trained, x), outputs(deployed, x))
    assert max_rel <= 1e-5


def test_official_arch_mode_writes_the_official_deploy_layout(tmp_path, capsys):
    torch.manual_seed(1)
    backbone = randomize_bn_statistics(RepVGG('A0'), seed=1).eval()
    linear = nn.Linear(1280, 10)
    state = dict(backbone.state_dict())
    state.update({f'linear.{k}': v for k, v in linear.state_dict().items()})
    source = tmp_path / 'RepVGG-A0-train.pth'
    torch.save({'model': {f'module.{k}': v for k, v in state.items()}}, source)
    out = tmp_path / 'RepVGG-A0-deploy.pth'
    assert main(['convert', '--arch', 'RepVGG-A0', str(source), str(out),
                 '--shape', '64']) == 0
    printed = capsys.readouterr().out
    assert 'PASS' in printed and 'linear (10 classes)' in printed

    converted = torch.load(out, weights_only=True)['state_dict']
    assert list(converted) == [key for key, _ in load_manifest('RepVGG-A0__deploy')]
    assert torch.equal(converted['linear.weight'], linear.weight)

    assert main(['verify', '--arch', 'RepVGG-A0', str(source), '--shape', '64',
                 '--deploy-checkpoint', str(out)]) == 0
    assert 'PASS' in capsys.readouterr().out
    deployed = RepVGG('A0', deploy=True).eval()
    assert load_weights(deployed, str(out)).ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(backbone(x)[0], deployed(x)[0]) <= 1e-5


def test_tool_script_and_console_script_run_as_subprocesses(tmp_path):
    config = write_config(tmp_path, CLS_CONFIG)
    ckpt, _ = save_training_checkpoint(tmp_path, CLS_CONFIG)
    out = tmp_path / 'out.pth'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    convert = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'convert.py'), config, ckpt, str(out),
         '--shape', '1', '3', '32', '32'], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert convert.returncode == 0, convert.stderr
    assert 'PASS' in convert.stdout and out.is_file()
    console = Path(sys.executable).with_name('rep-mm')
    command = [str(console)] if console.is_file() else [sys.executable, '-m', 'rep_mm.cli']
    verify = subprocess.run(
        command + ['verify', config, ckpt, '--shape', '32', '32', '--deploy-checkpoint',
                   str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert 'PASS' in verify.stdout


# ---------------------------------------------------------------------------- bad inputs
def _snapshot(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_output_equal_to_input_is_refused_and_input_untouched(tmp_path, capsys):
    config = write_config(tmp_path, CLS_CONFIG)
    ckpt, _ = save_training_checkpoint(tmp_path, CLS_CONFIG)
    original = Path(ckpt).read_bytes()
    link, hard_link = tmp_path / 'link.pth', tmp_path / 'hard.pth'
    link.symlink_to(ckpt)
    os.link(ckpt, hard_link)
    for out in (ckpt, str(link), str(hard_link), os.path.join(str(tmp_path), '.', 'train.pth')):
        files = _snapshot(tmp_path)
        assert main(['convert', config, ckpt, out, '--shape', '32', '--overwrite']) == 2
        assert 'is the same file as the input' in capsys.readouterr().err
        assert Path(ckpt).read_bytes() == original and _snapshot(tmp_path) == files
    assert main(['convert', config, ckpt, config, '--shape', '32', '--overwrite']) == 2
    assert 'same file as the input' in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path, capsys):
    config = write_config(tmp_path, CLS_CONFIG)
    ckpt, _ = save_training_checkpoint(tmp_path, CLS_CONFIG)
    out = tmp_path / 'out.pth'
    out.write_bytes(b'keep me')
    assert main(['convert', config, ckpt, str(out), '--shape', '32']) == 2
    assert '--overwrite' in capsys.readouterr().err and out.read_bytes() == b'keep me'
    assert main(['convert', config, ckpt, str(out), '--shape', '32', '--overwrite']) == 0
    assert 'rbr_reparam' in ''.join(torch.load(out, weights_only=True)['state_dict'])


def test_corrupted_checkpoint_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path, CLS_CONFIG)
    ckpt, _ = save_training_checkpoint(tmp_path, CLS_CONFIG)
    data = Path(ckpt).read_bytes()
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(data[:len(data) // 3])
    files = _snapshot(tmp_path)
    assert main(['convert', config, str(broken), str(tmp_path / 'out.pth'),
                 '--shape', '32']) == 2
    err = capsys.readouterr().err
    assert 'truncated or corrupted' in err and str(broken) in err
    assert _snapshot(tmp_path) == files
    assert main(['verify', config, str(broken), '--shape', '32']) == 2


def test_mismatched_checkpoint_lists_the_keys_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path, CLS_CONFIG)
    wider = CLS_CONFIG.replace('width_factor=[0.25, 0.25, 0.25, 0.5]',
                               'width_factor=[0.5, 0.5, 0.5, 0.5]')
    ckpt, _ = save_training_checkpoint(tmp_path, wider, name='wider.pth')
    files = _snapshot(tmp_path)
    assert main(['convert', config, ckpt, str(tmp_path / 'out.pth'), '--shape', '32']) == 2
    err = capsys.readouterr().err
    assert 'shape mismatch' in err
    assert 'backbone.stage0.rbr_dense.conv.weight: checkpoint [32, 3, 3, 3] vs model ' \
           '[16, 3, 3, 3]' in err
    assert _snapshot(tmp_path) == files


def test_deploy_checkpoint_given_to_convert_says_so(tmp_path, capsys):
    config = write_config(tmp_path, CLS_CONFIG)
    ckpt, _ = save_training_checkpoint(tmp_path, CLS_CONFIG)
    out = tmp_path / 'out.pth'
    assert main(['convert', config, ckpt, str(out), '--shape', '32']) == 0
    capsys.readouterr()
    assert main(['convert', config, str(out), str(tmp_path / 'again.pth'),
                 '--shape', '32']) == 2
    assert 'checkpoint is in deploy form (rbr_reparam keys) but the model is in training ' \
           'form' in capsys.readouterr().err
    assert not (tmp_path / 'again.pth').exists()


def test_unknown_arch_bad_shape_and_wrong_path_count(tmp_path, capsys):
    source = tmp_path / 'in.pth'
    torch.save({'w': torch.ones(1)}, source)
    assert main(['convert', '--arch', 'RepVGG-Z9', str(source), str(tmp_path / 'o.pth')]) == 2
    err = capsys.readouterr().err
    assert "unknown arch 'RepVGG-Z9'" in err and 'RepVGG-A0' in err and 'RepVGGplus-L2pse' in err
    assert main(['convert', '--arch', 'RepVGG-A0', str(source), str(tmp_path / 'o.pth'),
                 '--shape', '1x3xfoo']) == 2
    assert '--shape must be integers' in capsys.readouterr().err
    assert main(['convert', str(source), str(tmp_path / 'o.pth')]) == 2
    assert 'expected 3 path(s) (CONFIG CKPT OUT), got 2' in capsys.readouterr().err
    assert main(['verify', 'missing_config.py', str(source)]) == 2
    assert "config 'missing_config.py' does not exist" in capsys.readouterr().err
    assert not (tmp_path / 'o.pth').exists()


def test_failed_verification_exits_1_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path, CLS_CONFIG)
    ckpt, _ = save_training_checkpoint(tmp_path, CLS_CONFIG)
    out = tmp_path / 'out.pth'
    assert main(['convert', config, ckpt, str(out), '--shape', '32', '--tolerance', '0']) == 1
    assert 'FAIL' in capsys.readouterr().out and not out.exists()
    # a converted checkpoint of OTHER training weights does not reproduce this one
    other, _ = save_training_checkpoint(tmp_path, CLS_CONFIG, seed=9, name='other.pth')
    assert main(['convert', config, other, str(out), '--shape', '32']) == 0
    capsys.readouterr()
    assert main(['verify', config, ckpt, '--shape', '32', '--deploy-checkpoint', str(out)]) == 1
    printed = capsys.readouterr().out
    assert 'FAIL' in printed
    rel = float(printed.split('max rel error ')[1].split()[0].rstrip(':,'))
    assert rel > 1e-2


def test_demo_arguments_are_forwarded(monkeypatch):
    received = []
    demo = types.ModuleType('rep_mm.demo.run')
    demo.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, 'rep_mm.demo.run', demo)
    assert main(['demo', '--task', 'cls', '--iters', '3']) == 0
    assert received == [['--task', 'cls', '--iters', '3']]


def test_help_and_no_command(capsys):
    assert main(['--help']) == 0
    assert 'convert' in capsys.readouterr().out
    assert main([]) == 2
    assert main(['convert', '--help']) == 0
    assert '--shape' in capsys.readouterr().out
