"""ReparameterizeHook in a real mmengine Runner: mmpretrain ImageClassifier on tiny digit images.

Every run randomises the BatchNorm statistics right after ``init_weights`` (a ``before_train``
hook), so the equivalence checks are not vacuous.
"""
import copy
import math
import os

import numpy as np
import pytest
import torch
from mmengine.hooks import EMAHook, Hook
from mmengine.runner import Runner
from torch.nn.modules.batchnorm import _BatchNorm

import rep_mm  # noqa: F401  (registers rep_mm.RepVGG and rep_mm.ReparameterizeHook)
from rep_mm.hooks import ReparameterizeHook
from rep_mm.integrations.mm_build import unwrap_model
from rep_mm.verify.bn_statistics import randomize_bn_statistics

TOLERANCE = 1e-5
CLASSES = (0, 1, 2)
PER_CLASS = 8


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    """A few dozen real handwritten digits (scikit-learn), 32x32 PNGs in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits
    root = tmp_path_factory.mktemp('digits')
    digits = load_digits()
    for label in CLASSES:
        (root / str(label)).mkdir()
        images = digits.images[digits.target == label][:PER_CLASS]
        for i, image in enumerate(images):
            pixels = (image * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).convert('RGB').save(
                root / str(label) / f'{i}.png')
    return str(root)


def loader(root, shuffle=False):
    return dict(batch_size=8, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=shuffle),
                dataset=dict(type='CustomDataset', data_root=root, with_label=True,
                             pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))


def model_cfg():
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
                               num_classes=len(CLASSES)),
        backbone=dict(type='rep_mm.RepVGG', arch=dict(num_blocks=[1, 1, 1, 1],
                                                      width_factor=[0.25] * 4)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=len(CLASSES), in_channels=128,
                  loss=dict(type='CrossEntropyLoss')))


def has_bn(model):
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def has_branches(model):
    """The RepVGG blocks still train with their branches (rbr_dense, BN inside)."""
    return hasattr(model.backbone.stage1[0], 'rbr_dense') and has_bn(model.backbone)


def clone_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def scores(outputs):
    return torch.stack([o.pred_score for o in outputs])


def rel_error(reference, candidate):
    return ((reference.double() - candidate.double()).abs().max() /
            reference.double().abs().max()).item()


class RandomizeBN(Hook):
    """Random BN statistics after init_weights, so that conversion errors would show."""

    def __init__(self, before_test=False):
        self.randomize_before_test = before_test  # for test-only runs without a checkpoint

    def before_train(self, runner):
        randomize_bn_statistics(unwrap_model(runner.model), seed=1)

    def before_test(self, runner):
        if self.randomize_before_test:
            self.before_train(runner)


class First(Hook):
    """Runs before every other hook: snapshots of the training-form model."""

    priority = 'HIGHEST'

    def __init__(self, perturb_ema=False):
        self.perturb_ema = perturb_ema
        self.val_snapshot = None
        self.test_reference = None
        self.train_reference = None

    def before_val_epoch(self, runner):
        self.val_snapshot = clone_state(unwrap_model(runner.model))

    def before_test(self, runner):
        if not self.perturb_ema:
            return
        # a Runner rebuilds EMA's copy in before_run; give it weights of its own (as after a
        # resume), so that the swap at test time really exchanges different tensors
        ema = next(h for h in runner.hooks if isinstance(h, EMAHook))
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in ema.ema_model.module.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.05 * p.std().nan_to_num())

    def before_test_epoch(self, runner):
        model = unwrap_model(runner.model)
        self.train_reference = copy.deepcopy(model).eval()
        self.test_reference = copy.deepcopy(model).eval()
        ema = [h for h in runner.hooks if isinstance(h, EMAHook)]
        if ema:  # what EMAHook swaps in: averaged parameters, the model's own buffers
            with torch.no_grad():
                for p, p_ema in zip(self.test_reference.parameters(),
                                    ema[0].ema_model.module.parameters()):
                    p.copy_(p_ema)


class Last(Hook):
    """Runs after every other hook: what the loops really evaluated."""

    priority = 'LOWEST'

    def __init__(self, first, reparam):
        self.first, self.reparam = first, reparam
        self.val_checks, self.test_scores, self.expected_test_scores = [], [], []
        self.labels, self.val_errors, self.val_epochs = [], [], []
        self.expected = None

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        model = unwrap_model(runner.model)
        converted = self.reparam.val_model
        self.val_checks.append(dict(
            routed=runner.model.val_step.__self__ is converted,
            converted_has_bn=has_bn(converted),
            training_has_branches=has_branches(model),
            weights_differ_from_training=any(
                not torch.equal(v, self.first.val_snapshot[k])
                for k, v in model.state_dict().items())))
        # training form, unconverted; on a copy, since heads write into the data samples
        self.expected = scores(type(model).val_step(model, copy.deepcopy(data_batch)))

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.val_errors.append(rel_error(self.expected, scores(outputs)))

    def after_val_epoch(self, runner, metrics=None):
        model = unwrap_model(runner.model)
        after = clone_state(model)
        self.val_epochs.append(dict(
            restored='val_step' not in runner.model.__dict__,
            unchanged=after.keys() == self.first.val_snapshot.keys() and all(
                torch.equal(after[k], self.first.val_snapshot[k]) for k in after),
            branches_after=has_branches(model)))

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.test_scores.append(scores(outputs))
        expected = self.first.test_reference.test_step(copy.deepcopy(data_batch))
        self.expected_test_scores.append(scores(expected))
        self.labels.append(torch.cat([o.gt_label for o in expected]))


def build_runner(root, work_dir, name, extra_hooks=(), reparam=None, load_from=None,
                 train=True, **runner_kwargs):
    reparam = reparam or ReparameterizeHook(raise_on_failure=True)
    first = First(perturb_ema=any(isinstance(h, EMAHook) for h in extra_hooks))
    last = Last(first, reparam)
    cfg = dict(
        model=model_cfg(), work_dir=str(work_dir), experiment_name=name,
        default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING',
        test_dataloader=loader(root), test_cfg=dict(),
        test_evaluator=dict(type='Accuracy', topk=(1,)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False,
                            save_best='accuracy/top1', rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[RandomizeBN(before_test=not train and load_from is None), first, *extra_hooks, reparam, last],
        load_from=load_from, **runner_kwargs)
    if train:
        cfg.update(
            train_dataloader=loader(root, shuffle=True),
            train_cfg=dict(by_epoch=False, max_iters=4, val_interval=2),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            val_dataloader=loader(root), val_cfg=dict(),
            val_evaluator=dict(type='Accuracy', topk=(1,)))
    return Runner(**cfg), reparam, first, last


def check_val(last, reparam, expect_ema):
    assert len(last.val_epochs) == 2  # val_interval 2 of 4 iterations
    for epoch in last.val_epochs:
        assert epoch['restored'] and epoch['unchanged'] and epoch['branches_after']
    assert len(last.val_checks) == 2 * 3  # 3 batches of 8 images per validation
    for check in last.val_checks:
        assert check['routed'], 'val_step did not go to the converted copy'
        assert not check['converted_has_bn']
        assert check['training_has_branches']
        assert check['weights_differ_from_training'] == expect_ema
    assert max(last.val_errors) <= TOLERANCE
    assert reparam.last_check['phase'] == 'val' and reparam.last_check['passed']
    assert reparam.last_check['max_rel_error'] <= TOLERANCE


def check_test(runner, last, reparam, metrics):
    model = unwrap_model(runner.model)
    assert not has_bn(model) and not hasattr(model.backbone.stage1[0], 'rbr_dense')
    assert reparam.last_check['phase'] == 'test' and reparam.last_check['passed']
    assert reparam.last_check['max_rel_error'] <= TOLERANCE
    got, expected = torch.cat(last.test_scores), torch.cat(last.expected_test_scores)
    assert rel_error(expected, got) <= TOLERANCE
    labels = torch.cat(last.labels)
    assert len(labels) == len(CLASSES) * PER_CLASS
    correct = (expected.argmax(1) == labels).sum().item()  # by the unconverted model
    # the Accuracy metric is a float32 percentage: compare counts, then the value
    assert round(metrics['accuracy/top1'] * len(labels) / 100) == correct
    assert metrics['accuracy/top1'] == pytest.approx(100 * correct / len(labels), rel=1e-6)


def test_val_uses_converted_copy_and_checkpoints_keep_training_form(digits_root, tmp_path):
    runner, reparam, _, last = build_runner(digits_root, tmp_path, 'hook_plain')
    runner.train()
    check_val(last, reparam, expect_ema=False)
    assert has_branches(runner.model)

    saved = sorted(p for p in tmp_path.glob('*.pth'))
    assert any(p.name.startswith('best_accuracy') for p in saved)  # saved in after_val_epoch
    assert {p.name for p in saved} >= {'iter_2.pth', 'iter_4.pth'}
    # Runner checkpoints load with weights_only=True: importing rep_mm allow-lists them
    for path in saved:
        checkpoint = torch.load(path, weights_only=True)
        state = checkpoint['state_dict']
        assert any('rbr_dense' in k for k in state), path.name
        assert not any('rbr_reparam' in k for k in state), path.name
        assert checkpoint['meta']['rep_mm_form'] == 'training', path.name

    # test from the last checkpoint in a fresh Runner: loaded first, then converted in place
    test_runner, reparam, _, last = build_runner(
        digits_root, tmp_path / 'test', 'hook_plain_test',
        load_from=str(tmp_path / 'iter_4.pth'), train=False)
    # Runner checkpoints load with weights_only=True: importing rep_mm allow-lists them
    metrics = test_runner.test()
    trained = torch.load(tmp_path / 'iter_4.pth', weights_only=True)['state_dict']
    reference = last.first.train_reference.state_dict()
    assert all(torch.equal(reference[k], trained[k]) for k in trained)  # loaded before test
    check_test(test_runner, last, reparam, metrics)


def test_with_ema_hook(digits_root, tmp_path):
    ema = EMAHook(momentum=0.5)
    runner, reparam, first, last = build_runner(digits_root, tmp_path, 'hook_ema',
                                                extra_hooks=[ema])
    runner.train()
    check_val(last, reparam, expect_ema=True)  # EMA weights were in the converted copy
    assert has_branches(runner.model) and has_branches(ema.ema_model.module)

    metrics = runner.test()
    check_test(runner, last, reparam, metrics)
    # EMAHook swapped back without error: the model holds its own (training) weights again,
    # the averaged copy its averages, both fused
    model, averaged = unwrap_model(runner.model), ema.ema_model.module
    assert not has_bn(averaged)
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_error(first.train_reference(inputs), model.eval()(inputs)) <= TOLERANCE
        assert rel_error(first.test_reference(inputs), averaged.eval()(inputs)) <= TOLERANCE
        assert rel_error(first.train_reference(inputs), first.test_reference(inputs)) > 1e-3
    names = dict(averaged.named_parameters())
    assert all(ema.ema_model.avg_parameters[k] is p for k, p in names.items())


def test_with_ddp_wrapper(digits_root, tmp_path, monkeypatch):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    monkeypatch.setenv('LOCAL_RANK', '0')
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):  # a distributed Runner sets them
        if name in os.environ:  # recorded by monkeypatch, restored after the test
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    # a one-process gloo group, set up before the Runner (which would call cuda.set_device)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=0,
                            world_size=1)
    try:
        runner, reparam, _, last = build_runner(
            digits_root, tmp_path, 'hook_ddp', launcher='pytorch',
            env_cfg=dict(dist_cfg=dict(backend='gloo')),
            cfg=dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None)))
        runner.train()
        assert isinstance(runner.model, MMDistributedDataParallel)
        check_val(last, reparam, expect_ema=False)
        # Runner checkpoints load with weights_only=True: importing rep_mm allow-lists them
        state = torch.load(tmp_path / 'iter_4.pth', weights_only=True)['state_dict']
        assert any(k.startswith('backbone.') and 'rbr_dense' in k for k in state)
        assert not any('rbr_reparam' in k for k in state)
        metrics = runner.test()
        assert isinstance(runner.model, MMDistributedDataParallel)  # converted inside
        check_test(runner, last, reparam, metrics)
    finally:
        dist.destroy_process_group()


def test_hook_runs_after_ema_or_refuses(digits_root, tmp_path):
    ema = EMAHook(momentum=0.5)
    early = ReparameterizeHook()
    early.priority = 'HIGH'
    runner, *_ = build_runner(digits_root, tmp_path, 'hook_order', extra_hooks=[ema],
                              reparam=early)
    with pytest.raises(ValueError, match='EMAHook'):
        runner.train()


def test_options_skip_conversion_and_failed_verification(digits_root, tmp_path):
    off = ReparameterizeHook(convert_before_val=False, convert_before_test=False)
    runner, reparam, _, last = build_runner(digits_root, tmp_path / 'off', 'hook_off',
                                            reparam=off, train=False)
    runner.test()
    assert has_branches(runner.model) and reparam.last_check is None
    assert rel_error(torch.cat(last.expected_test_scores), torch.cat(last.test_scores)) == 0

    # float32 conversion errors (~1e-7 here) cannot meet a tolerance of 1e-12
    strict = ReparameterizeHook(tolerance=1e-12)
    runner, reparam, _, _ = build_runner(digits_root, tmp_path / 'warn', 'hook_warn',
                                         reparam=strict, train=False)
    runner.test()
    check = reparam.last_check
    assert not check['passed'] and 0 < check['max_rel_error'] <= TOLERANCE
    assert not has_bn(runner.model)

    raising = ReparameterizeHook(tolerance=1e-12, raise_on_failure=True)
    runner, *_ = build_runner(digits_root, tmp_path / 'raise', 'hook_raise', reparam=raising,
                              train=False)
    with pytest.raises(RuntimeError, match='test equivalence on the first batch'):
        runner.test()


@pytest.mark.parametrize('kwargs, error', [
    (dict(verify='yes'), TypeError), (dict(convert_before_val=1), TypeError),
    (dict(tolerance=0), ValueError), (dict(tolerance='1e-5'), ValueError)])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match='ReparameterizeHook'):
        ReparameterizeHook(**kwargs)


# -- a NaN model is never verified -----------------------------------------------------------
class InjectNaN(Hook):
    """Random BN statistics, then a NaN in one parameter, before the loop (priority NORMAL,
    so before ReparameterizeHook's ``before_*_epoch``)."""

    def __init__(self, parameter):
        self.parameter = parameter

    def _inject(self, runner):
        model = unwrap_model(runner.model)
        randomize_bn_statistics(model, seed=1)
        with torch.no_grad():
            dict(model.named_parameters())[self.parameter].view(-1)[0] = float('nan')

    def before_val(self, runner):
        self._inject(runner)

    def before_test(self, runner):
        self._inject(runner)


def nan_runner(root, work_dir, name, parameter, reparam, val=False):
    """A test-only (or val-only) Runner whose model gets a NaN in ``parameter``."""
    loop = 'val' if val else 'test'
    cfg = dict(model=model_cfg(), work_dir=str(work_dir), experiment_name=name,
               default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING',
               custom_hooks=[InjectNaN(parameter), reparam])
    cfg.update({f'{loop}_dataloader': loader(root), f'{loop}_cfg': dict(),
                f'{loop}_evaluator': dict(type='Accuracy', topk=(1,))})
    return Runner(**cfg), reparam


def test_nan_in_an_unfolded_layer_fails_the_first_batch_check(digits_root, tmp_path):
    """The head's NaN reaches both outputs: the reference is not finite, never a PASS."""
    runner, reparam = nan_runner(digits_root, tmp_path / 'warn', 'nan_head', 'head.fc.bias',
                                 ReparameterizeHook())
    runner.test()  # default policy: a warning, the test runs on
    check = reparam.last_check
    assert check['phase'] == 'test' and check['passed'] is False
    assert math.isnan(check['max_rel_error']) and check['nonfinite']
    assert check['nonfinite'][0]['side'] == 'both' and check['nonfinite'][0]['kind'] == 'NaN'
    assert any('reference output itself is not finite' in f for f in check['failures'])
    assert not has_bn(runner.model)  # the blocks themselves were fine and converted

    runner, reparam = nan_runner(digits_root, tmp_path / 'raise', 'nan_head_raise',
                                 'head.fc.bias', ReparameterizeHook(raise_on_failure=True))
    with pytest.raises(RuntimeError, match='not finite'):
        runner.test()


def test_nan_in_a_block_is_not_converted_at_test(digits_root, tmp_path):
    parameter = 'backbone.stage1.0.rbr_dense.conv.weight'
    runner, reparam = nan_runner(digits_root, tmp_path / 'warn', 'nan_block', parameter,
                                 ReparameterizeHook())
    runner.test()
    check = reparam.last_check
    assert check['passed'] is False and math.isnan(check['max_rel_error'])
    assert 'backbone.stage1.0 (RepVGGBlock)' in check['failures'][0]
    assert 'rbr_dense.conv.weight' in check['failures'][0]
    assert has_branches(runner.model)  # the whole model stayed in training form

    runner, reparam = nan_runner(digits_root, tmp_path / 'raise', 'nan_block_raise', parameter,
                                 ReparameterizeHook(raise_on_failure=True))
    with pytest.raises(RuntimeError, match='cannot be converted'):
        runner.test()


def test_nan_in_a_block_at_validation_keeps_val_on_the_training_model(digits_root, tmp_path):
    runner, reparam = nan_runner(digits_root, tmp_path, 'nan_val',
                                 'backbone.stage2.0.rbr_1x1.conv.weight', ReparameterizeHook(),
                                 val=True)
    runner.val()
    check = reparam.last_check
    assert check['phase'] == 'val' and check['passed'] is False
    assert 'backbone.stage2.0' in check['failures'][0]
    assert 'val_step' not in runner.model.__dict__ and reparam.val_model is None

