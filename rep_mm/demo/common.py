"""Helpers the demo parts share: where the configs are, the digits data and config, fresh mm
Runners testing a checkpoint (converted by the deploy hook or not), side-by-side timing and
counts, atomic JSON."""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ['build_runner', 'set_reparam_hook', 'median_throughput', 'count_parameters',
           'leftover_training_blocks', 'evaluate_checkpoint',
           'digits_demo_config', 'prepare_demo_digits', 'require_config', 'spread_indices',
           'REPO_ROOT', 'QUICK_TRAIN_IMAGES', 'QUICK_TEST_IMAGES']

REPO_ROOT = Path(__file__).resolve().parents[2]  # the source checkout holding configs/
QUICK_TRAIN_IMAGES = 64  # --quick: 2 iterations per epoch at batch 32
QUICK_TEST_IMAGES = 128  # --quick: 2 test batches of 64


def require_config(config, what: str, hint: str = '') -> None:
    """Raise ``FileNotFoundError`` naming ``what`` unless ``config`` is a file."""
    if not Path(config).is_file():
        raise FileNotFoundError(f'{what} {config} not found; the demo runs from a source '
                                f'checkout of rep_mm (pip install -e .){hint}')


def build_runner(cfg, name: str):
    """A plain mmengine Runner of ``cfg`` named ``name`` (it logs to the console and its file;
    the demo's quiet Runners: :meth:`rep_mm.demo.progress.DemoPart.build_runner`)."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = name  # distinct loggers / visualizers per Runner in one process
    return Runner.from_cfg(cfg)


def spread_indices(total: int, count: int) -> List[int]:
    """``count`` indices spread evenly over ``range(total)`` (the folder tree is class-sorted,
    so this takes every class, unlike the first ``count``)."""
    count = min(count, total)
    return [i * total // count for i in range(count)]


def prepare_demo_digits(data_dir: str, quick: bool) -> Tuple[dict, Tuple[int, int]]:
    """Write (or reuse) the 32x32 digits tree in ``data_dir``: its split counts, and the
    ``(train, test)`` numbers of images a run uses (:data:`QUICK_TRAIN_IMAGES` /
    :data:`QUICK_TEST_IMAGES` when ``quick``)."""
    from rep_mm.datasets import prepare_digits
    counts = prepare_digits(data_dir, size=32, seed=0)['counts']
    images = ((QUICK_TRAIN_IMAGES, QUICK_TEST_IMAGES) if quick
              else (counts['train'], counts['test']))
    return counts, images


def digits_demo_config(config: Path, data_root: str, work_dir: str, quick: bool,
                       counts: dict):
    """The digits config ``config`` pointed at ``data_root`` (and shrunk for ``quick`` to
    :data:`QUICK_TRAIN_IMAGES` / :data:`QUICK_TEST_IMAGES` images of every class)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key]['dataset']['data_root'] = data_root
    cfg.data_root = data_root
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    if quick:
        cfg.train_dataloader.dataset.indices = spread_indices(counts['train'],
                                                              QUICK_TRAIN_IMAGES)
        for key in ('val_dataloader', 'test_dataloader'):
            cfg[key]['dataset']['indices'] = spread_indices(counts['test'], QUICK_TEST_IMAGES)
        cfg.default_hooks.logger.interval = 1
    return cfg


def set_reparam_hook(cfg, hook: Optional[dict]) -> None:
    """Replace the ``ReparameterizeHook`` of ``cfg.custom_hooks`` by ``hook`` (none if None)."""
    hooks = [h for h in (cfg.get('custom_hooks') or [])
             if str(h.get('type', '')).split('.')[-1] != 'ReparameterizeHook']
    cfg.custom_hooks = hooks + ([hook] if hook else [])


def evaluate_checkpoint(cfg, checkpoint: str, work_dir: str, name: str, deploy: bool,
                        metric: Optional[str] = None, build: Callable = build_runner):
    """Test ``checkpoint`` with a fresh Runner (converted first by a verifying, strict
    ReparameterizeHook if ``deploy``) inside rep_mm's checkpoint allow-list.

    ``build(cfg, name)`` makes the Runner (default :func:`build_runner`).
    Returns ``(value, runner)``: ``value`` is ``float(metrics[metric])``, or every metric as a
    float when ``metric`` is None.
    """
    from rep_mm.io import runner_allow_list
    cfg = copy.deepcopy(cfg)
    cfg.work_dir, cfg.load_from, cfg.resume = work_dir, checkpoint, False
    set_reparam_hook(cfg, dict(type='rep_mm.ReparameterizeHook', verify=True,
                               raise_on_failure=True) if deploy else None)
    runner = build(cfg, name)
    with runner_allow_list():  # nests, unlike torch's safe_globals context
        metrics = runner.test()
    if metric is not None:
        return float(metrics[metric]), runner
    return {k: float(v) for k, v in metrics.items()}, runner


@torch.no_grad()
def median_throughput(models: Dict[str, nn.Module], inputs: torch.Tensor, repeats: int,
                      passes: int) -> Dict[str, float]:
    """Median images/s of each model, timed in alternation on the same ``inputs``."""
    for model in models.values():
        model.eval()
        model(inputs, mode='tensor')  # warm-up
    rates: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(passes):
                model(inputs, mode='tensor')
            rates[name].append(passes * len(inputs) / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters())


def leftover_training_blocks(model: nn.Module) -> Dict[str, int]:
    """Blocks still in training form, and BatchNorms left in the backbone, after conversion."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from rep_mm.reparam import ReparamBlock
    backbone = getattr(model, 'backbone', model)
    return dict(
        unconverted_blocks=sum(isinstance(m, ReparamBlock) and not m.deploy
                               for m in model.modules()),
        batchnorm_in_backbone=sum(isinstance(m, _BatchNorm) for m in backbone.modules()))


