"""What ``rep-mm convert`` and ``rep-mm verify`` share: their options, the checks of ``--shape``
/ ``--tolerance`` / paths, building the model (``--arch`` or a config) and loading CKPT."""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..io import CheckpointError, ConfigError
from ..reparam import ReparamError
from .args import UsageError, add_unsafe_load, run_reporting_errors

__all__ = ['DEFAULT_SHAPE', 'parse_shape', 'check_tolerance', 'input_channels',
           'check_shape_fits', 'add_model_arguments', 'Steps', 'build_config_model',
           'build_model_of_config',
           'model_output', 'count_parameters', 'check_path_count', 'check_paths_exist',
           'check_arch', 'random_input', 'load_model', 'BAD_INPUT', 'report_errors']

DEFAULT_SHAPE = (1, 3, 224, 224)
# what rep-mm reports as bad input (exit 2): dedicated errors only; ReparamError (a block
# whose fused form is not finite) is a failed check (exit 1); anything else propagates
BAD_INPUT = (UsageError, CheckpointError, ConfigError, FileExistsError, IsADirectoryError)


def report_errors(prog: str, call) -> int:
    """``call()``'s exit code; :data:`BAD_INPUT` errors as ``PROG: error: ...`` (2), a
    :class:`~rep_mm.ReparamError` as ``PROG: FAIL: ...`` (1)."""
    code, error_code = run_reporting_errors(prog, call, bad_input=BAD_INPUT, failed=ReparamError)
    return error_code if error_code is not None else int(code or 0)


# -------------------------------------------------------------------------------- arguments
def parse_shape(tokens: Sequence[str]) -> Tuple[int, ...]:
    """``1x3x224x224`` / ``1 3 224 224`` (N C H W), ``224 224`` (H W) or ``224`` (H = W)."""
    if len(tokens) == 1 and 'x' in tokens[0]:
        tokens = tokens[0].split('x')
    try:
        values = tuple(int(t) for t in tokens)
    except ValueError:  # int() of one token: the only ValueError here
        raise UsageError(f'--shape must be integers (N C H W, H W or S), got '
                         f'{" ".join(tokens)}') from None
    if len(values) == 1:
        values = (1, 3, values[0], values[0])
    elif len(values) == 2:
        values = (1, 3) + values
    if len(values) != 4 or min(values) < 1:
        raise UsageError(f'--shape must be N C H W (or H W, or one size) of positive integers '
                         f'(sizes >= 1), got {" ".join(tokens)}')
    return values


def check_tolerance(value: float, name: str = '--tolerance') -> float:
    """A tolerance is a finite number >= 0 (0: bit-exact); a bad one is bad input (exit 2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise UsageError(f'{name} must be a finite number >= 0 (the largest relative error '
                         f'max|a-b|/max|a| that passes, e.g. 1e-5), got {value!r}')
    return float(value)


def input_channels(model: nn.Module) -> Optional[int]:
    """``in_channels`` of the first convolution the model would run, if it has one."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    return None


def check_shape_fits(shape: Tuple[int, ...], model: nn.Module) -> None:
    """``--shape``'s channel count must be the model's input channels."""
    channels = input_channels(model)
    if channels is not None and shape[1] != channels:
        raise UsageError(f'--shape {"x".join(map(str, shape))} has {shape[1]} channel(s) but the '
                         f'model takes {channels}: give N {channels} H W (e.g. --shape '
                         f'1x{channels}x{shape[2]}x{shape[3]})')


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of both commands: ``--arch``, ``--shape``, ``--tolerance``, ``--kind``,
    ``--target``, ``--seed``, ``--unsafe-load``."""
    from ..io import KINDS
    parser.add_argument('--arch', help='official arch instead of a config: RepVGG-A0, ..., '
                                       'RepVGG-D2se, RepVGGplus-L2pse')
    parser.add_argument('--shape', nargs='+', default=['x'.join(map(str, DEFAULT_SHAPE))],
                        help='random input for the check: N C H W, NxCxHxW, H W or one size '
                             '(default 1x3x224x224)')
    parser.add_argument('--tolerance', type=float, default=1e-5,
                        help='max relative error max|a-b|/max|a| to pass (default 1e-5)')
    parser.add_argument('--kind', choices=KINDS, default='auto',
                        help='naming scheme of the checkpoint (default: detect)')
    parser.add_argument('--target', choices=('model', 'backbone'), default='model',
                        help='with a config: load the whole model (default) or only its backbone')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random input')
    add_unsafe_load(parser, 'unpickle checkpoints fully (weights_only=False): trusted files only')


class Steps:
    """Progress over the named steps of a command (tqdm on a terminal, silent otherwise)."""

    def __init__(self, steps: Sequence[str]) -> None:
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=len(steps), desc=steps[0], leave=False, file=sys.stderr)

    def next(self, name: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_description(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------ models
def build_config_model(config: str) -> Tuple[nn.Module, Any]:
    """``cfg.model`` of an mm config (any toolbox) and the config, built by
    :func:`rep_mm.integrations.build_model`.

    Raises:
        ConfigError: the config cannot be read, or has no ``model``.
        KeyError / ValueError / TypeError: as the registry and the model's constructors raise
            them (an unknown type or arch, a bad argument).
    """
    from ..integrations import build_model
    from ..io import load_config_file
    cfg = load_config_file(config)  # also imports cfg.custom_imports (rep_mm, the toolbox)
    if 'model' not in cfg:
        raise ConfigError(f'config {config!r} has no `model` field')
    return build_model(cfg), cfg


def build_model_of_config(cfg: Any, config: str, model_cfg: Any = None) -> nn.Module:
    """:func:`rep_mm.integrations.build_model` for a command line: what the config asks for
    that cannot be built (an unknown type or arch, a bad argument: the ``KeyError`` /
    ``ValueError`` / ``TypeError`` of the registry and the constructors) is a
    :class:`~rep_mm.io.ConfigError` naming the config."""
    from ..integrations import build_model
    try:
        return build_model(cfg, model_cfg)
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError) as error:
        text = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ConfigError(f'config {config!r}: its model cannot be built: '
                          f'{type(error).__name__}: {text}') from error


def _cli_config_model(config: str) -> Tuple[nn.Module, Any]:
    """:func:`build_config_model` with the errors of :func:`build_model_of_config`."""
    from ..io import load_config_file
    cfg = load_config_file(config)
    if 'model' not in cfg:
        raise ConfigError(f'config {config!r} has no `model` field')
    return build_model_of_config(cfg, config), cfg


def model_output(model: nn.Module, inputs: Tensor) -> Any:
    """What to compare: ``mode='tensor'`` for mm models (logits / seg logits / head outputs;
    features + RPN outputs for two-stage detectors, see ``forward_tensor``)."""
    from mmengine.model import BaseModel

    from ..hooks.reparameterize_hook import forward_tensor
    from ..integrations import unwrap_model
    model = unwrap_model(model)
    if isinstance(model, BaseModel):
        return forward_tensor(model, dict(inputs=inputs))
    return model(inputs)


def count_parameters(model: nn.Module) -> int:
    """The number of parameter values of ``model``."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------ checks, load
def check_path_count(args: argparse.Namespace, n_paths: int) -> None:
    """``args.paths`` has ``n_paths`` entries (CONFIG CKPT [OUT], or IN [OUT] with --arch)."""
    if len(args.paths) == n_paths:
        return
    expected = ['CONFIG', 'CKPT', 'OUT'] if not args.arch else ['IN', 'OUT']
    if n_paths < len(expected):  # verify: no OUT
        expected = expected[:n_paths]
    raise UsageError(f'expected {n_paths} path(s) ({" ".join(expected)}'
                     f'{" with --arch" if args.arch else ""}), got {len(args.paths)}: '
                     f'{" ".join(args.paths) or "none"}')


def check_paths_exist(paths: Sequence[Tuple[str, str]]) -> None:
    """Each ``(what, path)`` names an existing file."""
    for what, path in paths:
        if not os.path.exists(path):
            raise UsageError(f'{what} {path!r} does not exist')
        if not os.path.isfile(path):
            raise UsageError(f'{what} {path!r} is not a file')


def check_arch(name: str) -> None:
    """``--arch`` names an official arch (:func:`rep_mm.io.arch_names`)."""
    from ..integrations.official import arch_names
    if name not in arch_names():
        raise UsageError(f'unknown arch {name!r}; choose one of {", ".join(arch_names())}')


def random_input(args: argparse.Namespace) -> Tensor:
    """The input of the check: ``--shape``, normal values seeded by ``--seed``."""
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randn(parse_shape(args.shape), generator=generator)


def load_model(args: argparse.Namespace, convert: bool = False
               ) -> Tuple[nn.Module, List[str], Dict[str, Any]]:
    """Build the model of ``--arch`` / the config and load CKPT strictly (either form with
    ``convert``; else a deploy-form CKPT for a training-form model is an error).

    Returns the model (eval mode), notes to print and the meta of the output checkpoint.
    """
    from ..integrations.official import build_arch_model, load_arch_weights
    from ..io import load_into
    checkpoint = args.paths[0 if args.arch else 1]
    meta: Dict[str, Any] = dict(source_checkpoint=os.path.abspath(checkpoint))
    if args.arch:
        check_arch(args.arch)
        model = build_arch_model(args.arch)
        check_shape_fits(parse_shape(args.shape), model)
        _, notes = load_arch_weights(model, checkpoint, args.kind, convert=convert,
                                     allow_unsafe=args.unsafe_load)
        meta.update(arch=args.arch, layout='official')
    else:
        model, cfg = _cli_config_model(args.paths[0])
        check_shape_fits(parse_shape(args.shape), model)
        result = load_into(model, checkpoint, kind=args.kind, target=args.target,
                           convert=convert, allow_unsafe=args.unsafe_load)
        notes = [result.summary()]
        meta.update(config=os.path.abspath(args.paths[0]), layout='model')
        try:
            meta['cfg'] = cfg.pretty_text
        except Exception:  # noqa: BLE001 - the text is informational only
            pass
    return model.eval(), notes, meta
