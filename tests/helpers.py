"""Helpers of the tests that run the tools as a user does (subprocesses) or train with scales."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from rep_mm.verify.bn_statistics import randomize_bn_statistics

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def randomize_branches(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics (``randomize_bn_statistics``), OREPA branch scales ``vector`` drawn
    from ``U(0.1, 1)``, and the identity-initialised factors (DBB / OREPA ``idconv1``, OREPA-1x1
    ``l2i``) moved off their initial value by ``0.1 * N(0, 1)``, so every branch counts."""
    randomize_bn_statistics(model, seed)
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.split('.')[-1] == 'vector':
            param.copy_((torch.rand(param.shape, generator=generator) * 0.9 + 0.1).to(param.dtype))
        elif 'idconv1' in name or 'l2i' in name:
            param.add_((torch.randn(param.shape, generator=generator) * 0.1).to(param.dtype))
    return model


def run_python(args, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    """``python ARGS...`` from the repo root, one OpenMP thread, output captured as text."""
    environment = dict(os.environ, OMP_NUM_THREADS='1', **env)
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def load_train_tool():
    """``tools/train.py`` as a module (its parse_args / load_config / build_runner ...)."""
    spec = importlib.util.spec_from_file_location('rep_mm_tools_train', REPO / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_scales_file(config: Path, directory: Path, seed: int) -> str:
    """A scales file for the RepOpt-VGG arch of ``config``: every hs scale drawn from
    ``U(0.5, 1.5)`` with a fixed ``seed``; returns its path."""
    from mmengine.config import Config

    from rep_mm.backbones import RepOptVGG
    hs = RepOptVGG(dict(Config.fromfile(str(config)).model.backbone.arch), mode='hs')
    generator = torch.Generator().manual_seed(seed)
    scales = {k: torch.rand(v.shape, generator=generator) + 0.5
              for k, v in hs.state_dict().items() if '.scale_' in k}
    path = Path(directory) / 'scales.pth'
    torch.save(scales, path)
    return str(path)
