"""OREPAOptimWrapperConstructor: the stem's own lr and OREPA's decay rule, in a real Runner."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

import rep_mm  # noqa: F401  (registers the rep_mm scope)
from rep_mm.backbones import ReparamResNet
from rep_mm.datasets import prepare_digits
from rep_mm.optim import OREPAOptimWrapperConstructor

ARCH = dict(block='basic', stage_blocks=(1, 1, 1, 1), width=0.125)
LR, WD = 0.05, 1e-4


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits') / 'digits'
    prepare_digits(root, size=16)
    return str(root)


def model_cfg(conv_type='orepa'):
    return dict(type='ImageClassifier',
                data_preprocessor=dict(num_classes=10, mean=[79.0] * 3, std=[89.0] * 3),
                backbone=dict(type='rep_mm.ReparamResNet', arch=ARCH, conv_type=conv_type,
                              stem_channels=8, out_indices=(3, )),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=10, in_channels=64,
                          loss=dict(type='CrossEntropyLoss')))


def optim_cfg(**paramwise):
    return dict(constructor='rep_mm.OREPAOptimWrapperConstructor',
                optimizer=dict(type='SGD', lr=LR, momentum=0.9, weight_decay=WD),
                paramwise_cfg=paramwise)


def groups_by_name(model, optimizer):
    by_id = {id(g['params'][0]): g for g in optimizer.param_groups}
    assert all(len(g['params']) == 1 for g in optimizer.param_groups)
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def test_runner_puts_the_stem_in_its_own_groups_with_its_lr(digits_root, tmp_path):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    runner = Runner(
        model=model_cfg(), work_dir=str(tmp_path),
        train_dataloader=dict(batch_size=8, num_workers=0,
                              dataset=dict(type='CustomDataset', data_root=digits_root,
                                           data_prefix='train', pipeline=pipeline),
                              sampler=dict(type='InfiniteSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=3),
        optim_wrapper=optim_cfg(stem_lr_mult=0.1, orepa_decay=True),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0,
                              end=2)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100,
                                           by_epoch=False)),
        default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING')
    model = runner.model
    stem_before = model.backbone.stage0.conv1.weight0.weight_orepa_origin.detach().clone()
    runner.train()
    groups = groups_by_name(model, runner.optim_wrapper.optimizer)
    stem = {n for n, g in groups.items() if g.get('stem')}
    expected_stem = {n for n, _ in model.named_parameters()
                     if n.startswith('backbone.stage0.conv1.')}
    assert stem == expected_stem and len(stem) == 3 * 9 + 2  # three 3x3 generators (7x7), stem BN
    # after the warm-up the scheduler scaled every group alike: the stem keeps 0.1 x lr
    for name, group in groups.items():
        assert group['lr'] == pytest.approx(LR * (0.1 if name in stem else 1.0)), name
    assert not torch.equal(stem_before, model.backbone.stage0.conv1.weight0.weight_orepa_origin)
    # OREPA's decay rule
    checks = {'backbone.stage1.0.conv1.weight_orepa_origin': WD,
              'backbone.stage1.0.conv1.vector': 0.0,
              'backbone.stage1.0.conv1.bn.weight': 0.0,
              'backbone.stage1.0.conv1.bn.bias': 0.0,
              'backbone.stage0.conv1.weight0.weight_orepa_pfir_conv': WD,
              'backbone.stage0.conv1.bn.weight': 0.0,
              'head.fc.weight': WD, 'head.fc.bias': 0.0}
    for name, decay in checks.items():
        assert groups[name]['weight_decay'] == pytest.approx(decay), name


def build(model, **paramwise):
    return build_optim_wrapper(model, optim_cfg(**paramwise))


def test_defaults_keep_every_group_at_the_base_lr_and_decay():
    from mmpretrain.registry import MODELS
    model = MODELS.build(model_cfg())
    wrapper = build(model)
    groups = groups_by_name(model, wrapper.optimizer)
    assert all(g['lr'] == LR and g['weight_decay'] == WD for g in groups.values())
    assert sum(bool(g.get('stem')) for g in groups.values()) == 29


def test_vector_decay_mult_and_stem_decay_mult_and_mmengine_keys_combine():
    from mmpretrain.registry import MODELS
    model = MODELS.build(model_cfg())
    wrapper = build(model, orepa_decay=True, vector_decay_mult=1.0, stem_lr_mult=0.5,
                    stem_decay_mult=0.0, custom_keys={'head': dict(lr_mult=2.0)})
    groups = groups_by_name(model, wrapper.optimizer)
    assert groups['backbone.stage2.0.conv2.vector']['weight_decay'] == pytest.approx(WD)
    assert groups['backbone.stage0.conv1.weight1.vector']['weight_decay'] == 0.0
    assert groups['backbone.stage0.conv1.weight1.vector']['lr'] == pytest.approx(LR * 0.5)
    assert groups['head.fc.weight']['lr'] == pytest.approx(2 * LR)


def test_stem_keys_name_a_stem_of_any_backbone():
    from mmpretrain.registry import MODELS
    model = MODELS.build(model_cfg('base'))  # plain conv-BN stem: no OREPALargeConv
    with pytest.raises(ValueError, match='has no OREPALargeConv stem; set stem_keys'):
        build(model, stem_lr_mult=0.1)
    wrapper = build(model, stem_lr_mult=0.1, stem_keys=['backbone.stage0.'])
    groups = groups_by_name(model, wrapper.optimizer)
    assert {n for n, g in groups.items() if g.get('stem')} == {
        'backbone.stage0.conv1.conv.weight', 'backbone.stage0.conv1.bn.weight',
        'backbone.stage0.conv1.bn.bias'}
    assert groups['backbone.stage0.conv1.conv.weight']['lr'] == pytest.approx(0.1 * LR)


def test_bad_configs_are_reported():
    with pytest.raises(ValueError, match='stem_lr_mult must be >= 0'):
        OREPAOptimWrapperConstructor(dict(optimizer=dict(type='SGD', lr=0.1)),
                                     dict(stem_lr_mult=-1))
    with pytest.raises(TypeError, match='stem_keys must be a list of non-empty str'):
        OREPAOptimWrapperConstructor(dict(optimizer=dict(type='SGD', lr=0.1)),
                                     dict(stem_keys='backbone.stem'))
    with pytest.raises(ValueError, match='need optimizer.weight_decay'):
        OREPAOptimWrapperConstructor(dict(optimizer=dict(type='SGD', lr=0.1)),
                                     dict(orepa_decay=True))
    assert isinstance(ReparamResNet(ARCH, 'orepa', stem_channels=8).stage0.conv1.weight0,
                      torch.nn.Module)
