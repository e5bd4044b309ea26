"""tools/train.py, tools/test.py and tools/dist_train.sh as a user runs them (subprocesses).

One short training of the digits config (64 images, 4 epochs of 2 iterations) feeds the tests:
testing in deploy form and in training form must give the same top-1; resuming goes through the
weights_only allow-list; a deploy-form checkpoint needs ``deploy=True`` and then reproduces it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rep_mm.io import load_checkpoint_file

from ..helpers import run_python

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
TINY = ['train_dataloader.dataset.indices=64', 'val_dataloader.dataset.indices=64',
        'test_dataloader.dataset.indices=64', 'default_hooks.logger.interval=1']


def tool(name):
    return REPO / 'tools' / name


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_root):
    work_dir = tmp_path_factory.mktemp('train')
    result = run_python([tool('train.py'), CONFIG, '--work-dir', work_dir,
                  '--cfg-options', f'data_root={data_root}', *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, result.stdout + result.stderr


def test_train_writes_training_form_checkpoints(trained, data_root):
    work_dir, log = trained
    assert 'Epoch(train) [4][2/2]' in log
    assert 'ReparameterizeHook: val equivalence on the first batch' in log
    state = load_checkpoint_file(work_dir / 'epoch_4.pth')
    assert state['meta']['epoch'] == 4
    keys = list(state['state_dict'])
    assert any('rbr_dense' in k for k in keys) and not any('rbr_reparam' in k for k in keys)


def _test(ckpt, work_dir, data_root, *extra):
    out = Path(work_dir) / f'metrics{len(list(Path(work_dir).glob("metrics*.json")))}.json'
    result = run_python([tool('test.py'), CONFIG, ckpt, '--work-dir', work_dir, '--out', out,
                  '--cfg-options', f'data_root={data_root}', *TINY, *extra])
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_deploy_and_training_form_give_the_same_top1(trained, data_root, tmp_path):
    work_dir, _ = trained
    ckpt = work_dir / 'epoch_4.pth'
    deployed, metrics_deploy = _test(ckpt, tmp_path, data_root)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    log = deployed.stdout + deployed.stderr
    assert 'ReparameterizeHook: testing the converted model: 7 block(s) converted' in log
    assert '(PASS at tolerance 1e-05)' in log
    plain, metrics_train = _test(ckpt, tmp_path, data_root, '--no-deploy')
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert 'testing the converted model' not in plain.stdout + plain.stderr
    assert 0.0 <= metrics_deploy['accuracy/top1'] <= 100.0
    assert metrics_deploy['accuracy/top1'] == metrics_train['accuracy/top1']


def test_deploy_checkpoint_needs_deploy_config(trained, data_root, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import rep_mm
    work_dir, _ = trained
    cfg = Config.fromfile(str(CONFIG))
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.load_state_dict(load_checkpoint_file(work_dir / 'epoch_4.pth')['state_dict'])
    rep_mm.reparameterize(model)
    deploy_ckpt = tmp_path / 'deploy.pth'
    torch.save({'state_dict': model.state_dict()}, deploy_ckpt)

    refused, _ = _test(deploy_ckpt, tmp_path, data_root)
    assert refused.returncode != 0
    assert 'the checkpoint is in deploy form (rbr_reparam keys)' in refused.stderr
    assert 'model.backbone.deploy=True' in refused.stderr
    accepted, metrics = _test(deploy_ckpt, tmp_path, data_root,
                              'model.backbone.deploy=True')
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    _, reference = _test(work_dir / 'epoch_4.pth', tmp_path, data_root, '--no-deploy')
    assert metrics['accuracy/top1'] == reference['accuracy/top1']


def test_bad_inputs_are_reported(tmp_path, data_root):
    missing = run_python([tool('test.py'), CONFIG, tmp_path / 'none.pth'])
    assert missing.returncode != 0 and "checkpoint '" in missing.stderr
    assert 'is not a file' in missing.stderr
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    corrupt, _ = _test(garbage, tmp_path, data_root)
    assert corrupt.returncode != 0, corrupt.stderr
    assert 'is corrupted' in corrupt.stderr, corrupt.stderr[-6000:]
    no_config = run_python([tool('train.py'), tmp_path / 'nope.py'])
    assert no_config.returncode == 2 and 'does not exist' in no_config.stderr
    same = tmp_path / 'metrics.json'
    same.write_text('{}')
    clobber = run_python([tool('test.py'), CONFIG, same, '--out', same])
    assert clobber.returncode != 0 and 'is the input file' in clobber.stderr
    assert same.read_text() == '{}'


def test_resume_continues_from_the_checkpoint(trained, data_root, tmp_path):
    work_dir, _ = trained
    result = run_python([tool('train.py'), CONFIG, '--work-dir', tmp_path,
                  '--resume', work_dir / 'epoch_4.pth',
                  '--cfg-options', f'data_root={data_root}', *TINY, 'train_cfg.max_epochs=5'])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'resumed epoch: 4, iter: 8' in log
    assert 'Epoch(train) [5][2/2]' in log and 'Epoch(train) [1]' not in log
    assert load_checkpoint_file(tmp_path / 'epoch_5.pth')['meta']['iter'] == 10


def test_dist_train_two_cpu_processes(tmp_path, data_root):
    port = str(29500 + os.getpid() % 1000)
    result = subprocess.run(
        ['bash', str(tool('dist_train.sh')), str(CONFIG), '2', '--work-dir', str(tmp_path),
         '--cfg-options', f'data_root={data_root}', *TINY, 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=1', 'param_scheduler=[]'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1', PORT=port, PYTHON=sys.executable))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Distributed training: True' in log
    # validation of the converted copy inside the DDP wrapper
    assert 'ReparameterizeHook: val equivalence on the first batch' in log
    assert '(PASS at tolerance 1e-05)' in log
    # 64 images over 2 processes at batch 32: one iteration per process
    assert 'Epoch(train) [1][1/1]' in log
    state = load_checkpoint_file(tmp_path / 'epoch_1.pth')
    assert any('rbr_dense' in k for k in state['state_dict'])
