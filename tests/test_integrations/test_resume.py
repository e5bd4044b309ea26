"""Resuming a run gives exactly the weights of the uninterrupted run (RepVGG and RepOptimizer).

Each case trains ``N = 8`` iterations in one go, and ``N / 2`` iterations, then resumes from
that checkpoint (``tools/train.py --resume CKPT``) to ``N``; the final state dicts must be
bit-identical, and so must the optimizer state (momentum buffers) and the learning rate.
48 images at batch 16 make 3 iterations per epoch, so the resumed run restarts mid-epoch and
crosses an epoch boundary (the data loader is advanced past the consumed batches; the sampler
reshuffles by epoch). Settings that make this exact: ``randomness.deterministic=True``,
0 data-loader workers, a fixed sampler seed and no random augmentation (mmengine checkpoints
do not store the RNG states that random crops would need; with them, resume is only
statistically equivalent). The learning-rate schedule (warmup + cosine) is part of the
resumed state. For RepOptimizer the grad-mult map is rebuilt from the scales file on resume
(not re-initialised: RepOptInitHook skips a resumed run), keyed by the resumed parameters.
"""
from pathlib import Path

import pytest
import torch

from rep_mm.io import load_checkpoint_file

from ..helpers import load_train_tool, random_scales_file

REPO = Path(__file__).resolve().parents[2]
REPVGG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
REPOPT = REPO / 'configs' / 'repopt' / 'repoptvgg-tiny-target_1xb32_digits.py'
N = 8

OVERRIDES = """
_base_ = [{base!r}]
data_root = {data_root!r}
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16, num_workers=0,
    dataset=dict(data_root=data_root, pipeline=pipeline, indices=48),
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0))
val_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, indices=32))
test_dataloader = val_dataloader
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters},
                 val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=3),
    dict(type='CosineAnnealingLR', T_max={total} - 3, by_epoch=False, begin=3, end={total},
         eta_min=0.0)]
default_hooks = dict(checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=False,
                                     interval={half}),
                     logger=dict(type='LoggerHook', interval=1))
randomness = dict(seed=0, deterministic=True)
log_level = 'WARNING'
"""


@pytest.fixture(autouse=True)
def restore_determinism():
    """The runs set ``torch.use_deterministic_algorithms(True)``; give the flag back."""
    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)


def write_config(directory, name, base, data_root, iters, extra=''):
    path = Path(directory) / f'{name}.py'  # distinct names: distinct Runner experiment names
    path.write_text(OVERRIDES.format(base=str(base), data_root=data_root, iters=iters,
                                     total=N, half=N // 2) + extra)
    return str(path)


def full_and_resumed(tmp_path, base, data_root, extra=''):
    """(uninterrupted checkpoint, resumed checkpoint, log lines of the resumed run)."""
    train = load_train_tool()
    full, half, resumed = tmp_path / 'full', tmp_path / 'half', tmp_path / 'resumed'
    assert train.main([write_config(tmp_path, f'{base.stem}_full', base, data_root, N, extra),
                       '--work-dir', str(full)]) == 0
    assert train.main([write_config(tmp_path, f'{base.stem}_half', base, data_root, N // 2,
                                    extra), '--work-dir', str(half)]) == 0
    assert not (half / f'iter_{N}.pth').exists()
    assert train.main([write_config(tmp_path, f'{base.stem}_resume', base, data_root, N, extra),
                       '--work-dir', str(resumed), '--resume',
                       str(half / f'iter_{N // 2}.pth')]) == 0
    return (load_checkpoint_file(full / f'iter_{N}.pth'),
            load_checkpoint_file(resumed / f'iter_{N}.pth'),
            load_checkpoint_file(half / f'iter_{N // 2}.pth'))


def assert_identical(full, resumed, halfway):
    assert resumed['meta']['iter'] == full['meta']['iter'] == N
    a, b = full['state_dict'], resumed['state_dict']
    assert list(a) == list(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'resumed weights differ from the uninterrupted run: {different[:5]}'
    # the comparison is not vacuous: the second half of training moved the weights
    assert any(not torch.equal(halfway['state_dict'][k], a[k]) for k in a
               if a[k].is_floating_point())
    # optimizer state (momentum buffers) and the schedule continue exactly as well
    state_a, state_b = full['optimizer']['state'], resumed['optimizer']['state']
    assert state_a.keys() == state_b.keys() and state_a
    for key in state_a:
        for name, value in state_a[key].items():
            if torch.is_tensor(value):
                assert torch.equal(value, state_b[key][name]), (key, name)
    lr_a = [g['lr'] for g in full['optimizer']['param_groups']]
    lr_b = [g['lr'] for g in resumed['optimizer']['param_groups']]
    assert lr_a == lr_b


def test_repvgg_resume_is_exact(tmp_path, data_root):
    full, resumed, halfway = full_and_resumed(tmp_path, REPVGG, data_root)
    assert_identical(full, resumed, halfway)


@pytest.fixture(scope='module')
def scales_path(tmp_path_factory):
    if not REPOPT.exists():
        pytest.skip(f'{REPOPT} not present')
    return random_scales_file(REPOPT, tmp_path_factory.mktemp('scales'), seed=11)


def test_repoptimizer_resume_is_exact_and_keeps_the_grad_mults(tmp_path, data_root,
                                                                scales_path, monkeypatch):
    from rep_mm.optim import RepOptInitHook, RepOptSGD
    reinits, maps = [], []
    original_before_train = RepOptInitHook.before_train

    def spy_before_train(self, runner):
        handler = runner.optim_wrapper.repopt_handler
        calls = []
        original = handler.reinitialize
        monkeypatch.setattr(handler, 'reinitialize',
                            lambda *a, **k: (calls.append(1), original(*a, **k)))
        original_before_train(self, runner)
        reinits.append((runner._has_loaded, len(calls)))
        optimizer = runner.optim_wrapper.optimizer
        assert isinstance(optimizer, RepOptSGD)
        params = {id(p) for g in optimizer.param_groups for p in g['params']}
        mults = optimizer.grad_mult_map
        maps.append((len(mults), all(id(p) in params for p in mults)))

    monkeypatch.setattr(RepOptInitHook, 'before_train', spy_before_train)
    extra = f'optim_wrapper = dict(scales={scales_path!r})\n'
    full, resumed, halfway = full_and_resumed(tmp_path, REPOPT, data_root, extra)
    assert_identical(full, resumed, halfway)
    # from scratch: re-initialised once; resumed: weights kept, map rebuilt for its parameters
    assert reinits == [(False, 1), (False, 1), (True, 0)], reinits
    assert maps[0][0] > 0 and maps[0] == maps[1] == maps[2] and maps[2][1], maps


# --------------------------------------------------------------- interrupted writes lose nothing
def interrupting_save(real_save):
    """A ``torch.save`` that writes half of the real bytes, then is interrupted (Ctrl-C)."""
    def save(obj, stream, *args, **kwargs):
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        stream.write(data[:len(data) // 2])
        stream.flush()
        raise KeyboardInterrupt('simulated interruption in the middle of torch.save')
    return save


def snapshot(directory):
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}


CLS_CONFIG = """
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier',
             backbone=dict(type='rep_mm.{backbone}', arch={arch}{extra}),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=4, in_channels={channels}))
"""


def test_interrupted_convert_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    from rep_mm.cli.dispatch import build_config_model, main
    from rep_mm.verify.bn_statistics import randomize_bn_statistics
    config = tmp_path / 'cls.py'
    config.write_text(CLS_CONFIG.format(backbone='RepVGG', extra='', channels=128, arch=dict(
        num_blocks=[1, 1, 1, 1], width_factor=[0.25] * 4)))
    model = randomize_bn_statistics(build_config_model(str(config))[0], seed=0)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'train.pth')
    out = tmp_path / 'deploy.pth'
    out_existing = tmp_path / 'existing.pth'
    out_existing.write_bytes(b'an older deploy checkpoint')
    before = snapshot(tmp_path)
    monkeypatch.setattr(torch, 'save', interrupting_save(torch.save))
    for target, extra in ((out, []), (out_existing, ['--overwrite'])):
        with pytest.raises(KeyboardInterrupt):
            main(['convert', str(config), str(tmp_path / 'train.pth'), str(target),
                  '--shape', '32', *extra])
        # no partial OUT, no temp file, the replaced file and the input untouched
        assert snapshot(tmp_path) == before
    monkeypatch.undo()
    assert main(['convert', str(config), str(tmp_path / 'train.pth'), str(out),
                 '--shape', '32']) == 0
    assert 'rbr_reparam' in ''.join(load_checkpoint_file(out)['state_dict'])


def test_interrupted_scale_extraction_leaves_no_partial_file(tmp_path, monkeypatch):
    from rep_mm.backbones import RepOptVGG
    from rep_mm.cli.extract_scales import extract_scales_file
    arch = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.125] * 4)
    config = tmp_path / 'target.py'
    config.write_text(CLS_CONFIG.format(backbone='RepOptVGG', extra=", mode='target'",
                                        channels=64, arch=arch))
    hs = RepOptVGG(arch, mode='hs')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in hs.state_dict().items()}},
               tmp_path / 'hs.pth')
    before = snapshot(tmp_path)
    monkeypatch.setattr(torch, 'save', interrupting_save(torch.save))
    with pytest.raises(KeyboardInterrupt):
        extract_scales_file(str(tmp_path / 'hs.pth'), str(tmp_path / 'scales.pth'), str(config))
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    summary = extract_scales_file(str(tmp_path / 'hs.pth'), str(tmp_path / 'scales.pth'),
                                  str(config))
    assert summary['num_scales'] > 0 and (tmp_path / 'scales.pth').exists()


def test_runner_allow_list_survives_a_nested_load(tmp_path):
    """A rep_mm load inside tools/train.py's allow-list context must not switch it off."""
    from mmengine.logging import HistoryBuffer

    from rep_mm.io import runner_allow_list
    torch.save({'w': torch.ones(1)}, tmp_path / 'plain.pth')
    torch.save({'hub': HistoryBuffer([1.0], [1])}, tmp_path / 'runner.pth')
    before = torch.serialization.get_safe_globals()
    with runner_allow_list():
        load_checkpoint_file(tmp_path / 'plain.pth')  # enters and leaves its own context
        assert isinstance(torch.load(tmp_path / 'runner.pth', weights_only=True)['hub'],
                          HistoryBuffer)
    assert torch.serialization.get_safe_globals() == before
