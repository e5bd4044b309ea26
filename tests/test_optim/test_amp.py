"""RepOptimizer's constructor with mmengine's AMP wrapper on the CPU (bfloat16 autocast)."""
import copy

import pytest
import torch
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import Runner
from torch.nn import functional as F

import rep_mm  # noqa: F401  (registers the rep_mm scope)
from rep_mm.backbones import RepOptVGG
from rep_mm.datasets import prepare_digits
from rep_mm.optim import CPUAmpOptimWrapper, RepOptSGD, build_handler, official_param_groups
from rep_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

ARCH = dict(num_blocks=(2, 1, 1, 1), width_factor=(0.125, 0.125, 0.125, 0.125))
SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)


@pytest.fixture(scope='module')
def scales():
    hs = RepOptVGG(ARCH, mode='hs')
    gen = torch.Generator().manual_seed(3)
    return {k: torch.rand(v.shape, generator=gen) + 0.3
            for k, v in hs.state_dict().items() if '.scale_' in k}


def build_wrapper(model, scales, wrapper_type, **wrapper):
    cfg = dict(type='rep_mm.RepOptOptimWrapperConstructor',
               optim_wrapper_cfg=dict(type=wrapper_type, scales=scales,
                                      optimizer=dict(type='rep_mm.RepOptSGD', **SGD), **wrapper))
    return OPTIM_WRAPPER_CONSTRUCTORS.build(cfg)(model)


@pytest.mark.skipif(torch.cuda.is_available(), reason='mmengine allows its AMP wrapper on GPUs')
def test_mmengine_amp_wrapper_refuses_the_cpu(scales):
    # why CPUAmpOptimWrapper exists: mmengine asserts a GPU-like device in the constructor
    with pytest.raises(AssertionError, match='only available training on gpu'):
        build_wrapper(RepOptVGG(ARCH), scales, 'AmpOptimWrapper', dtype='bfloat16')


def test_constructor_builds_the_cpu_amp_wrapper_and_steps_like_autocast(scales):
    torch.manual_seed(0)
    model = RepOptVGG(ARCH, num_classes=10)
    reference, initial = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    wrapper = build_wrapper(model, scales, 'rep_mm.CPUAmpOptimWrapper', dtype='bfloat16')
    assert isinstance(wrapper, CPUAmpOptimWrapper) and isinstance(wrapper, AmpOptimWrapper)
    assert isinstance(wrapper.optimizer, RepOptSGD) and wrapper.cast_dtype == torch.bfloat16
    ref_opt = RepOptSGD(official_param_groups(reference, SGD['weight_decay']),
                        grad_mult_map=build_handler(reference, scales).grad_mults('sgd'), **SGD)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        with wrapper.optim_context(model):
            logits = model(x)
        assert logits.dtype == torch.bfloat16  # the forward ran under bfloat16 autocast
        wrapper.update_params(F.cross_entropy(logits.float(), y))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ref_logits = reference(x)
        ref_opt.zero_grad()
        F.cross_entropy(ref_logits.float(), y).backward()
        ref_opt.step()
    state, ref_state = model.state_dict(), reference.state_dict()
    for key in state:
        assert state[key].dtype == ref_state[key].dtype
        assert torch.equal(state[key], ref_state[key]), key
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(state['stage1.0.conv.weight'], initial['stage1.0.conv.weight'])
    assert all(m.dtype == torch.float32 for m in wrapper.optimizer.grad_mult_map.values())
    # the checkpoint round trip of the wrapper (optimizer state + the disabled scaler)
    saved = wrapper.state_dict()
    assert 'loss_scaler' in saved and saved['state']
    other = build_wrapper(RepOptVGG(ARCH, num_classes=10), scales, 'rep_mm.CPUAmpOptimWrapper')
    other.load_state_dict(copy.deepcopy(saved))
    assert other.optimizer.state_dict()['param_groups'] == saved['param_groups']
    with pytest.raises(ValueError, match='bfloat16 only'):
        CPUAmpOptimWrapper(optimizer=wrapper.optimizer, dtype='float16')


def test_runner_trains_repopt_with_cpu_amp(tmp_path, scales):
    root = tmp_path / 'digits'
    prepare_digits(root, size=16)
    scales_path = tmp_path / 'scales.pth'
    torch.save(scales, scales_path)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    runner = Runner(
        model=dict(type='ImageClassifier',
                   data_preprocessor=dict(num_classes=10, mean=[79.0] * 3, std=[89.0] * 3),
                   backbone=dict(type='rep_mm.RepOptVGG', arch=ARCH, strides=(1, 2, 2, 2, 2)),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=10, in_channels=64,
                             loss=dict(type='CrossEntropyLoss'))),
        work_dir=str(tmp_path / 'work'),
        train_dataloader=dict(batch_size=8, num_workers=0, sampler=dict(
            type='InfiniteSampler', shuffle=False), dataset=dict(
            type='CustomDataset', data_root=str(root), data_prefix='train', pipeline=pipeline)),
        train_cfg=dict(by_epoch=False, max_iters=3),
        optim_wrapper=dict(type='rep_mm.CPUAmpOptimWrapper', dtype='bfloat16',
                           constructor='rep_mm.RepOptOptimWrapperConstructor',
                           scales=str(scales_path),
                           optimizer=dict(type='rep_mm.RepOptSGD', **SGD)),
        custom_hooks=[dict(type='rep_mm.RepOptInitHook')],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False)),
        default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING')
    runner.train()
    assert isinstance(runner.optim_wrapper, CPUAmpOptimWrapper)
    assert runner.iter == 3
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))
    assert (tmp_path / 'work' / 'iter_3.pth').is_file()
