"""What the demo parts share: train to a checkpoint, compare its training-time and converted forms.

* :func:`train_to_checkpoint`: one training run with a fresh Runner of the part.
* :func:`compare_forms`: tests one training-form checkpoint with two fresh Runners -- as is,
  and converted in place by a verifying ``rep_mm.ReparameterizeHook`` -- then runs both
  models on the whole test set (logits from a part-specific function), times them side by
  side and counts parameters and left-over training-time blocks.
* :func:`run_forms_demo`: the flow of a part that trains one model and compares its forms
  (classification, segmentation): plan the progress bar, train, :func:`compare_forms`, draw
  both forms' predictions. What differs between the parts is a :class:`FormsDemo`.
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
                                median_throughput)
from rep_mm.demo.progress import planned_iterations

__all__ = ['FormComparison', 'FormsDemo', 'FormsRun', 'compare_forms', 'run_forms_demo',
           'train_to_checkpoint']

FORMS = (('train', False, 'test training-time'), ('deploy', True, 'test converted'))


def train_to_checkpoint(part, cfg, name: str, label: str = 'train') -> Tuple[object, float, str]:
    """Train ``cfg`` with a fresh Runner of ``part``: ``(runner, seconds, last checkpoint)``."""
    from mmengine.runner import EpochBasedTrainLoop

    from rep_mm.io import runner_allow_list
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
    from rep_mm.integrations import unwrap_model
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


@dataclass(frozen=True)
class FormsDemo:
    """What a part that trains one model and compares its two forms gives
    :func:`run_forms_demo`."""

    prefix: str  # of the Runners' work dirs and experiment names ('' or 'seg_')
    metric: str  # the test metric of each form ('accuracy/top1', 'mIoU')
    logits_of: Callable[[nn.Module, object], torch.Tensor]  # (model, dataloader) -> logits
    phase: str  # the progress phase after the comparison (drawing, and what the part adds)
    draw: Callable[[FormComparison, str, str], str]  # (forms, path, caption) -> the PNG
    figure_name: str  # the PNG's file name in the demo's work dir
    caption: str  # the PNG's caption: ``{train}`` / ``{deploy}`` take each form's metric


@dataclass(frozen=True)
class FormsRun:
    """A :class:`FormsDemo` run: its two forms compared and drawn."""

    forms: FormComparison
    values: Dict[str, float]  # the demo's metric of each form (``train`` / ``deploy``)
    checkpoint: str  # the training-form checkpoint
    train_seconds: float
    figure: str  # the PNG written

    def summary(self) -> dict:
        """The summary fields of every such part: ``train_seconds``, ``figure`` and
        :attr:`FormComparison.summary`."""
        return dict(train_seconds=round(self.train_seconds, 2), figure=self.figure,
                    **self.forms.summary)


def run_forms_demo(demo: FormsDemo, part, cfg, work_dir: str, images: Tuple[int, int],
                   quick: bool) -> FormsRun:
    """Train ``cfg`` (``cfg.work_dir``), test and compare both forms, draw their predictions.

    Args:
        demo (FormsDemo): what the part compares and draws.
        part (DemoPart): the part's progress bar and logs (entered by the caller).
        cfg (Config): the part's config.
        work_dir (str): the demo's directory (test Runners' work dirs, the PNG).
        images (tuple[int, int]): training and test images (the progress bar's plan).
        quick (bool): fewer timing repeats.
    """
    part.plan(planned_iterations(cfg, *images, tests=2))
    _, seconds, checkpoint = train_to_checkpoint(part, cfg, f'demo_{demo.prefix}train')
    forms = compare_forms(part, cfg, checkpoint, work_dir, demo.prefix, demo.logits_of, quick)
    values = {form: metrics[demo.metric] for form, metrics in forms.metrics.items()}
    part.phase(demo.phase)
    figure = demo.draw(forms, osp.join(work_dir, demo.figure_name),
                       demo.caption.format(**values))
    return FormsRun(forms, values, checkpoint, seconds, figure)
