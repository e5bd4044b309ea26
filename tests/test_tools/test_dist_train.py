"""2-process CPU training with tools/dist_train.sh (torchrun + gloo) against a 1-process run.

What is compared, and why the tolerance: every run trains 4 iterations on the same 128 digits
with a global batch of 32 (2 processes x 16 vs 1 process x 32), no random augmentation, a fixed
sampler seed (the DistributedSampler-style split gives rank r the samples r, r+2, ... of each
global batch, so both runs see the same 32 images per step) and the backbone's BatchNorms in
eval mode (``norm_eval=True``). BatchNorm in training mode is deliberately left out of the
comparison: its batch statistics are per process (16 images) unless it is synchronised, and
``torch.nn.SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU"), so a
per-process-BN run is *not* the same function as the 1-process run. With BN frozen, both runs
compute the same gradients up to the order of floating-point sums: DDP averages two per-rank
means through gloo's allreduce, the single run takes one mean over 32. That reordering costs
a few float32 ulps per step; after 4 SGD steps with momentum we accept a relative difference
``max|a-b| / max|a|`` of 1e-5 per tensor (the same order as the float32 conversion tolerance;
measured: see the assertion messages / the report, ~1e-7).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rep_mm.io import load_checkpoint_file

from ..helpers import random_scales_file

REPO = Path(__file__).resolve().parents[2]
REPVGG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
REPOPT = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'
TOLERANCE = 1e-5
ITERS = 4
pytestmark = pytest.mark.slow

OVERRIDES = """
_base_ = [{base!r}]
custom_imports = dict(imports=['rep_mm', 'tests.test_tools.dist_probe'],
                      allow_failed_imports=False)
data_root = {data_root!r}
model = dict(backbone=dict(norm_eval=True))
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size={batch}, num_workers=0,
    dataset=dict(data_root=data_root, pipeline=pipeline, indices=128),
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0))
val_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, indices=64))
test_dataloader = val_dataloader
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters},
                 val_interval={iters})
param_scheduler = []
default_hooks = dict(checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=False,
                                     interval={half}),
                     logger=dict(type='LoggerHook', interval=1))
custom_hooks = {hooks} + [dict(type='rep_mm.DistProbeHook')]
randomness = dict(seed=0, deterministic=True)
"""


@pytest.fixture(scope='module')
def scales_path(tmp_path_factory):
    """Scales for the tiny RepOpt-VGG arch of the digits config (random, fixed seed)."""
    if not REPOPT.exists():
        pytest.skip(f'{REPOPT} not present')
    return random_scales_file(REPOPT, tmp_path_factory.mktemp('scales'), seed=3)


def write_config(directory, base, data_root, batch, extra=''):
    from mmengine.config import Config
    hooks = [dict(h) for h in Config.fromfile(str(base)).get('custom_hooks', [])]
    if not any(h['type'] == 'rep_mm.ReparameterizeHook' for h in hooks):
        hooks.append(dict(type='rep_mm.ReparameterizeHook'))  # the deploy hook under test
    path = Path(directory) / f'{base.stem}_b{batch}.py'
    path.write_text(OVERRIDES.format(base=str(base), data_root=data_root, batch=batch,
                                     iters=ITERS, half=ITERS // 2, hooks=hooks) + extra)
    return path


def environment():
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))


def train_in_process(config, work_dir):
    """The 1-process reference, run in this process (saves an interpreter start)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('rep_mm_tools_train', REPO / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        assert module.main([str(config), '--work-dir', str(work_dir)]) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic)


def train(config, work_dir, nproc, port):
    if nproc == 1:
        return train_in_process(config, work_dir)
    command = ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), str(nproc)]
    env = dict(environment(), PORT=str(port))
    result = subprocess.run(command + ['--work-dir', str(work_dir)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def probes(work_dir):
    return {int(p.stem[len('probe_rank'):]): json.loads(p.read_text())
            for p in Path(work_dir).glob('probe_rank*.json')}


def state_rel_diff(a, b):
    """Worst per-tensor ``max|a-b| / max|a|`` over the floating-point tensors; and its key."""
    worst = (0.0, None)
    assert a.keys() == b.keys()
    for key, ref in a.items():
        if ref.is_floating_point():
            diff = (ref.double() - b[key].double()).abs().max().item()
            scale = max(ref.double().abs().max().item(), 1e-12)
            worst = max(worst, (diff / scale, key), key=lambda t: t[0])
    return worst


def run_pair(tmp_path, base, data_root, port, extra=''):
    single_dir, dist_dir = tmp_path / 'single', tmp_path / 'dist'
    train(write_config(tmp_path, base, data_root, 32, extra), single_dir, 1, port)
    log = train(write_config(tmp_path, base, data_root, 16, extra), dist_dir, 2, port)
    return single_dir, dist_dir, log


def check_distributed_run(single_dir, dist_dir, log, blocks):
    assert 'Distributed training: True' in log
    dist = probes(dist_dir)
    assert sorted(dist) == [0, 1], f'one probe per rank expected, got {sorted(dist)}'
    for rank, record in dist.items():
        assert record['world_size'] == 2
        assert record['wrapper'] == 'MMDistributedDataParallel'
        assert record['device_ids'] is None
        # the deploy hook converted the module INSIDE the wrapper (a copy), on every rank
        (val,) = record['val']
        assert val['converted'] == blocks
        assert val['val_model'] == dict(blocks=blocks, deployed=blocks), val
        assert val['training_model'] == dict(blocks=blocks, deployed=0), val
        assert val['val_step_of_converted_copy'] and val['check']['passed'], val
    # only rank 0 writes checkpoints
    assert dist[0]['saved'] == [f'iter_{ITERS // 2}.pth', f'iter_{ITERS}.pth']
    assert dist[1]['saved'] == []
    files = sorted(p.name for p in dist_dir.glob('*.pth'))
    assert files == [f'iter_{ITERS // 2}.pth', f'iter_{ITERS}.pth']
    # the same global batch gives the same model
    single = load_checkpoint_file(single_dir / f'iter_{ITERS}.pth')
    multi = load_checkpoint_file(dist_dir / f'iter_{ITERS}.pth')
    assert multi['meta']['iter'] == single['meta']['iter'] == ITERS
    initial = load_checkpoint_file(single_dir / f'iter_{ITERS // 2}.pth')['state_dict']
    moved, _ = state_rel_diff(initial, single['state_dict'])
    assert moved > 1e-3, 'training did not change the weights; the comparison would be vacuous'
    worst, key = state_rel_diff(single['state_dict'], multi['state_dict'])
    print(f'max relative weight difference 1 vs 2 processes: {worst:.3g} ({key})')
    assert worst <= TOLERANCE, f'{key}: relative difference {worst:.3g} > {TOLERANCE:g}'
    # the validation metric of the converted copy agrees too (64 images over 2 ranks)
    top1 = [probes(d)[0]['val'][0]['metrics']['accuracy/top1'] for d in (single_dir, dist_dir)]
    assert top1[0] == pytest.approx(top1[1], abs=1e-6)


def test_repvgg_two_processes_match_one(tmp_path, data_root):
    port = 29500 + os.getpid() % 500
    # a SyncBN config as users write it for GPUs: tools/train.py falls back to BN on the CPU
    extra = "model['backbone']['norm_cfg'] = dict(type='SyncBN')\n"
    single_dir, dist_dir, log = run_pair(tmp_path, REPVGG, data_root, port, extra)
    assert 'warning: SyncBN does not run on the CPU; using BN' in log
    check_distributed_run(single_dir, dist_dir, log, blocks=7)


def test_repopt_vgg_two_processes_match_one(tmp_path, data_root, scales_path):
    port = 30100 + os.getpid() % 500
    extra = f'optim_wrapper = dict(scales={scales_path!r})\n'
    single_dir, dist_dir, log = run_pair(tmp_path, REPOPT, data_root, port, extra)
    assert 'RepOptInitHook: re-initialised' in log
    check_distributed_run(single_dir, dist_dir, log, blocks=7)


def test_sync_bn_falls_back_to_bn_on_cpu():
    """torch's SyncBatchNorm refuses CPU tensors; the CPU launcher swaps it for BN."""
    import importlib.util

    from mmengine.config import Config
    spec = importlib.util.spec_from_file_location('rep_mm_tools_train', REPO / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = Config(dict(
        model=dict(backbone=dict(type='rep_mm.RepVGG', norm_cfg=dict(type='SyncBN')),
                   decode_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                   auxiliary_head=[dict(norm_cfg=dict(type='BN'))]),
        sync_bn='torch'))
    changed = tool.replace_sync_bn(cfg)
    assert changed == ["model.backbone.norm_cfg.type='SyncBN'",
                       "model.decode_head.norm_cfg.type='SyncBN'", "sync_bn='torch'"]
    assert cfg.model.backbone.norm_cfg.type == cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.model.decode_head.norm_cfg.requires_grad and not cfg.sync_bn
