"""What the demo parts share: train to a checkpoint, compare its training-time and converted forms.

:func:`compare_forms` tests one training-form checkpoint with two fresh Runners -- as is, and
converted in place by a verifying ``rep_mm.ReparameterizeHook`` -- then runs both models on
the whole test set (logits from a part-specific function), times them side by side and counts
parameters and left-over training-time blocks.
"""
from __future__ import annotations

import functools
import os.path as osp
import time
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from torch import nn

from rep_mm.demo.common import (count_parameters, evaluate_checkpoint, leftover_training_blocks,
                               median_throughput, unwrap_model)

__all__ = ['FormComparison', 'compare_forms', 'train_to_checkpoint']

FORMS = (('train', False, 'test training-time'), ('deploy', True, 'test converted'))


def train_to_checkpoint(part, cfg, name: str, label: str = 'train') -> Tuple[object, float, str]:
    """Train ``cfg`` with a fresh Runner of ``part``: ``(runner, seconds, last checkpoint)``."""
    from mmengine.runner import EpochBasedTrainLoop

    from rep_mm.io.checkpoint import runner_allow_list
    runner = part.build_runner(cfg, name, label)
    started = time.perf_counter()
    with runner_allow_list():
        runner.train()
    seconds = time.perf_counter() - started
    loop = runner.train_loop
    step = (f'epoch_{loop.max_epochs}' if isinstance(loop, EpochBasedTrainLoop)
            else f'iter_{loop.max_iters}')
    return runner, seconds, osp.join(cfg.work_dir, f'{step}.pth')


@dataclass
class FormComparison:
    """The two forms of one checkpoint, side by side (``train`` / ``deploy`` keys)."""

    metrics: Dict[str, Dict[str, float]]  # every metric of each Runner's test
    models: Dict[str, nn.Module]
    logits: Dict[str, torch.Tensor]  # on the whole test set, in loader order
    dataloader: object  # the converted Runner's test dataloader
    summary: dict  # JSON-ready measurements every part reports


def compare_forms(part, cfg, checkpoint: str, work_dir: str, prefix: str,
                  logits_of: Callable[[nn.Module, object], torch.Tensor],
                  quick: bool) -> FormComparison:
    """Test ``checkpoint`` in both forms and compare them.

    Args:
        part (DemoPart): builds the Runners (progress bar, file logs).
        cfg (Config): the part's config (its ReparameterizeHook is replaced per form).
        checkpoint (str): a training-form checkpoint.
        work_dir (str): the demo's directory; the Runners use ``<prefix>test_{train,deploy}``.
        prefix (str): prefix of the Runners' work dirs and experiment names (``seg_``...).
        logits_of (callable): ``(model, dataloader) -> logits`` of every test sample.
        quick (bool): fewer timing repeats.

    Returns:
        FormComparison: with ``summary`` holding ``max_abs_logit_diff``,
        ``max_rel_logit_diff``, ``images_per_second`` (train / deploy / batch), ``speedup``,
        ``params``, ``converted_blocks``, ``hook_check``, ``unconverted_blocks`` and
        ``batchnorm_in_backbone``.
    """
    metrics, models = {}, {}
    for form, deploy, label in FORMS:
        metrics[form], runner = evaluate_checkpoint(
            cfg, checkpoint, osp.join(work_dir, f'{prefix}test_{form}'),
            f'demo_{prefix}test_{form}', deploy,
            build=functools.partial(part.build_runner, label=label))
        models[form] = unwrap_model(runner.model)
    hook = next(h for h in runner.hooks if type(h).__name__ == 'ReparameterizeHook')
    dataloader = runner.test_loop.dataloader
    part.phase('compare and time both forms')
    logits = {form: logits_of(model, dataloader) for form, model in models.items()}
    max_abs = (logits['train'] - logits['deploy']).abs().max().item()
    inputs = models['deploy'].data_preprocessor(next(iter(dataloader)), False)['inputs']
    rates = median_throughput(models, inputs, repeats=3 if quick else 7,
                              passes=1 if quick else 5)
    summary = dict(
        max_abs_logit_diff=max_abs,
        max_rel_logit_diff=max_abs / logits['train'].abs().max().item(),
        images_per_second=dict(train=rates['train'], deploy=rates['deploy'],
                               batch=int(len(inputs))),
        speedup=rates['deploy'] / rates['train'],
        params={form: count_parameters(model) for form, model in models.items()},
        converted_blocks=len(hook.last_report.converted) if hook.last_report else 0,
        hook_check=hook.last_check, **leftover_training_blocks(models['deploy']))
    return FormComparison(metrics, models, logits, dataloader, summary)
