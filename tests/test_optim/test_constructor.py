"""The optimizer-wrapper constructor and RepOptInitHook in a real mmengine Runner on digits."""
import copy

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

import rep_mm  # noqa: F401  (registers the rep_mm scope)
from rep_mm.backbones import RepOptVGG
from rep_mm.datasets import prepare_digits
from rep_mm.optim import CLIP_GRAD_MESSAGE, RepOptOptimWrapperConstructor, RepOptSGD
from rep_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

ARCH = dict(num_blocks=(2, 1, 1, 1), width_factor=(0.125, 0.125, 0.125, 0.125))


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits')
    prepare_digits(root / 'digits', size=16)
    return str(root / 'digits')


@pytest.fixture(scope='module')
def scales_file(tmp_path_factory):
    hs = RepOptVGG(ARCH, mode='hs')
    gen = torch.Generator().manual_seed(5)
    scales = {k: torch.rand(v.shape, generator=gen) + 0.2
              for k, v in hs.state_dict().items() if '.scale_' in k}
    path = tmp_path_factory.mktemp('scales') / 'tiny-scales.pth'
    torch.save(scales, path)
    return str(path), scales


class KernelRecorder(Hook):
    """Records stage1.1's kernel at before_train (priority decides before / after the re-init)."""

    def __init__(self, priority, store):
        self.priority, self.store = priority, store

    def before_train(self, runner):
        kernel = runner.model.backbone.stage1[1].conv.weight.detach().clone()
        self.store.append(kernel)


def make_runner(work_dir, digits_root, scales_path, store=None, **overrides):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    store = [] if store is None else store
    cfg = dict(
        model=dict(type='ImageClassifier',
                   data_preprocessor=dict(num_classes=10, mean=[79.0] * 3, std=[89.0] * 3),
                   backbone=dict(type='rep_mm.RepOptVGG', arch=ARCH, mode='target',
                                 strides=(1, 2, 2, 2, 2)),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=10, in_channels=64,
                             loss=dict(type='CrossEntropyLoss'))),
        work_dir=str(work_dir),
        train_dataloader=dict(
            batch_size=8, num_workers=0,
            dataset=dict(type='CustomDataset', data_root=digits_root, data_prefix='train',
                         pipeline=pipeline),
            sampler=dict(type='InfiniteSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(constructor='rep_mm.RepOptOptimWrapperConstructor',
                           scales=scales_path,
                           optimizer=dict(type='rep_mm.RepOptSGD', lr=0.05, momentum=0.9,
                                          nesterov=True, weight_decay=4e-5)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='rep_mm.RepOptInitHook'), KernelRecorder('HIGHEST', store),
                      KernelRecorder('LOWEST', store)],
        default_scope='mmpretrain',
        randomness=dict(seed=0),
        log_level='WARNING',
    )
    cfg.update(overrides)
    return Runner(**cfg)


def test_runner_trains_and_reinitialises_from_scratch(tmp_path, digits_root, scales_file):
    store = []
    runner = make_runner(tmp_path / 'a', digits_root, scales_file[0], store)
    model = runner.train()
    before, after = store
    s_conv = scales_file[1]['stage1.1.scale_conv.weight'].view(-1, 1, 1)
    # the rule of initialisation: off-centre taps are W * s_conv, the centre also gets the
    # random 1x1 kernel and the identity
    assert torch.equal(after[:, :, 0], before[:, :, 0] * s_conv)
    assert not torch.equal(after[:, :, 1, 1], before[:, :, 1, 1] * s_conv[:, :, 0])
    assert isinstance(runner.optim_wrapper.optimizer, RepOptSGD)
    assert len(runner.optim_wrapper.optimizer.grad_mult_map) == 6
    trained = model.backbone.stage1[1].conv.weight.detach()
    assert (trained - after).abs().max() > 1e-4  # it trained
    assert runner.iter == 4


def test_resume_mid_training_continues_exactly(tmp_path, digits_root, scales_file):
    straight = make_runner(tmp_path / 'a', digits_root, scales_file[0])
    straight.train()
    final = {k: v.clone() for k, v in straight.model.state_dict().items()}
    checkpoint = tmp_path / 'a' / 'iter_2.pth'
    # Runner checkpoints load with weights_only=True: importing rep_mm allow-lists them
    saved = torch.load(checkpoint, weights_only=True)
    # only torch SGD's state is saved: the grad-mult map is rebuilt, never pickled
    assert {key for state in saved['optimizer']['state'].values() for key in state} == \
        {'momentum_buffer'}
    store = []
    resumed = make_runner(tmp_path / 'b', digits_root, scales_file[0], store,
                          load_from=str(checkpoint), resume=True)
    resumed.train()
    before, after = store
    assert torch.equal(before, after)  # no re-initialisation on resume
    assert torch.equal(after, saved['state_dict']['backbone.stage1.1.conv.weight'])
    assert resumed.iter == 4
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, final[key]), key
    mults = resumed.optim_wrapper.optimizer.grad_mult_map
    assert resumed.model.backbone.stage1[1].conv.weight in mults


def test_load_from_skips_the_reinitialisation(tmp_path, digits_root, scales_file):
    make_runner(tmp_path / 'a', digits_root, scales_file[0],
                train_cfg=dict(by_epoch=False, max_iters=2)).train()
    store = []
    # Runner checkpoints load with weights_only=True: importing rep_mm allow-lists them
    make_runner(tmp_path / 'b', digits_root, scales_file[0], store,
                load_from=str(tmp_path / 'a' / 'iter_2.pth'),
                train_cfg=dict(by_epoch=False, max_iters=1)).train()
    assert torch.equal(store[0], store[1])


def constructor_cfg(scales, **wrapper):
    return dict(type='rep_mm.RepOptOptimWrapperConstructor',
                optim_wrapper_cfg=dict(scales=scales, optimizer=dict(
                    type='RepOptAdamW', lr=1e-3, weight_decay=0.05), **wrapper))


def test_clip_grad_is_refused_with_the_reason(scales_file):
    with pytest.raises(ValueError, match='clip_grad is refused with RepOptimizer') as info:
        OPTIM_WRAPPER_CONSTRUCTORS.build(
            constructor_cfg(scales_file[0], clip_grad=dict(max_norm=1.0)))
    assert 'no longer the update of the equivalent CSLA model' in str(info.value)
    assert CLIP_GRAD_MESSAGE in str(info.value)


def test_constructor_groups_mults_and_errors(scales_file):
    model = RepOptVGG(ARCH)
    wrapper = OPTIM_WRAPPER_CONSTRUCTORS.build(constructor_cfg(scales_file[0]))(model)
    optimizer = wrapper.optimizer
    decay, no_decay = optimizer.param_groups
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    assert all(p.ndim == 4 for p in decay['params'])
    assert all(p.ndim == 1 for p in no_decay['params'])  # BN weights and biases
    conv = model.stage1[1].conv.weight
    s = scales_file[1]
    # AdamW: power 1, identity +1 on the diagonal centre
    assert torch.equal(optimizer.grad_mult_map[conv][3, 3, 1, 1],
                       s['stage1.1.scale_conv.weight'][3] + s['stage1.1.scale_1x1.weight'][3] + 1)
    with pytest.raises(ValueError, match="optimizer type must be one of"):
        RepOptOptimWrapperConstructor(dict(scales=scales_file[0], optimizer=dict(type='SGD')))
    with pytest.raises(ValueError, match='needs optim_wrapper.scales'):
        RepOptOptimWrapperConstructor(dict(optimizer=dict(type='RepOptSGD')))
    with pytest.raises(ValueError, match='missing key'):
        OPTIM_WRAPPER_CONSTRUCTORS.build(constructor_cfg(scales_file[0]))(
            RepOptVGG(dict(ARCH, num_blocks=(1, 3, 1, 1))))
    cfg = constructor_cfg(scales_file[0])
    assert copy.deepcopy(cfg) == cfg  # the constructor does not mutate its config
