"""The ``rep-mm`` command: convert and verify re-parameterizable models, run the demo.

Subcommands::

    rep-mm convert CONFIG CKPT OUT [--shape 1x3x224x224] [--tolerance 1e-5] [--overwrite]
    rep-mm convert --arch RepVGG-A0 IN OUT          # an official release, no config needed
    rep-mm verify CONFIG CKPT [--deploy-checkpoint D] [--shape ...] [--tolerance 1e-5]
    rep-mm verify --arch RepVGG-A0 IN [--deploy-checkpoint D]
    rep-mm demo ...                                  # forwarded to rep_mm.demo.classification.main
    rep-mm extract-scales HS_CKPT OUT --config CFG   # forwarded to rep_mm.cli.extract_scales.main
    rep-mm export CONFIG [CKPT] --work-dir DIR ...   # forwarded to rep_mm.deploy.main (ONNX)
    rep-mm quantize CONFIG [CKPT] --work-dir DIR ... # forwarded to rep_mm.quantization.main (int8)

Exit codes: 0 success, 1 verification failed (nothing written), 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .args import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_overwrite, add_unsafe_load
from ..reparam import ReparamError
from ..io.checkpoint import (KINDS, CheckpointError, extract_state_dict, load_checkpoint_file,
                         load_weights, save_checkpoint_atomic)

DEFAULT_SHAPE = (1, 3, 224, 224)
HEAD_KEYS = (('linear.weight', 'linear.bias'), ('head.fc.weight', 'head.fc.bias'))


class UsageError(ValueError):
    """Bad command-line input; reported as ``rep-mm <cmd>: error: ...`` with exit code 2."""


# ------------------------------------------------------------------------------------ models
def arch_names() -> List[str]:
    """Every name ``--arch`` accepts: ``RepVGG-<arch>`` and ``RepVGGplus-<arch>``."""
    from ..backbones import RepVGG, RepVGGplus
    return ([f'RepVGG-{a}' for a in RepVGG.arch_settings] +
            [f'RepVGGplus-{a}' for a in RepVGGplus.arch_settings])


class OfficialClassifier(nn.Module):
    """The official classifier layout: backbone, global average pooling, ``linear``.

    ``linear`` is None for backbone-only checkpoints; the output is then the last feature map.
    """

    def __init__(self, backbone: nn.Module, linear: Optional[nn.Linear] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)[-1]
        if self.linear is None:
            return features
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))

    def official_state_dict(self) -> Dict[str, Tensor]:
        """Backbone keys without prefix plus ``linear.*``: the official checkpoint layout."""
        state = dict(self.backbone.state_dict())
        if self.linear is not None:
            state.update({f'linear.{k}': v for k, v in self.linear.state_dict().items()})
        return state


def build_arch_model(name: str, deploy: bool = False) -> OfficialClassifier:
    """An :class:`OfficialClassifier` around ``rep_mm.RepVGG`` / ``RepVGGplus`` by arch name."""
    from ..backbones import RepVGG, RepVGGplus
    family, _, arch = name.partition('-')
    classes = {'RepVGG': RepVGG, 'RepVGGplus': RepVGGplus}
    if family not in classes or arch not in classes[family].arch_settings:
        raise UsageError(f'unknown arch {name!r}; choose one of {", ".join(arch_names())}')
    return OfficialClassifier(classes[family](arch=arch, deploy=deploy))


def load_arch_weights(model: OfficialClassifier, state_dict: Dict[str, Tensor],
                      kind: str) -> List[str]:
    """Load backbone (strict) and classifier of an official / mmpretrain file; return notes."""
    report = load_weights(model.backbone, state_dict, kind=kind, strict=True, target='backbone')
    head = next((pair for pair in HEAD_KEYS if pair[0] in state_dict), None)
    report.skipped = [k for k in report.skipped if head is None or k not in head]
    notes = [report.summary()]
    if head is None:
        notes.append('no classifier (linear.* / head.fc.*) in the checkpoint: backbone only')
        return notes
    weight = state_dict[head[0]]
    bias = state_dict.get(head[1])
    channels = model.backbone.out_channels[-1]
    if weight.ndim != 2 or weight.shape[1] != channels:
        raise CheckpointError(f'classifier {head[0]} has shape {list(weight.shape)}, expected '
                              f'[num_classes, {channels}] for this arch')
    model.linear = nn.Linear(channels, weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        model.linear.weight.copy_(weight)
        if bias is not None:
            model.linear.bias.copy_(bias)
    model.linear.train(model.training)
    notes.append(f'classifier {head[0].rsplit(".", 1)[0]} -> linear '
                 f'({weight.shape[0]} classes)')
    return notes


def build_config_model(config: str) -> Tuple[nn.Module, Any]:
    """Build ``cfg.model`` of an mm config (any toolbox) through mmengine's root registry."""
    from mmengine.registry import MODELS, init_default_scope

    from ..io.files import load_config_file
    cfg = load_config_file(config)  # also imports cfg.custom_imports (rep_mm, the toolbox)
    if 'model' not in cfg:
        raise UsageError(f'config {config!r} has no `model` field')
    if cfg.get('default_scope'):
        init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model), cfg


def model_output(model: nn.Module, inputs: Tensor) -> Any:
    """What to compare: ``mode='tensor'`` for mm models (logits / seg logits / head outputs;
    features + RPN outputs for two-stage detectors, see ``forward_tensor``)."""
    from mmengine.model import BaseModel, is_model_wrapper

    from ..hooks.reparameterize_hook import forward_tensor
    if is_model_wrapper(model):
        model = model.module
    if isinstance(model, BaseModel):
        return forward_tensor(model, dict(inputs=inputs))
    return model(inputs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------- arguments
def parse_shape(tokens: Sequence[str]) -> Tuple[int, ...]:
    """``1x3x224x224`` / ``1 3 224 224`` (N C H W), ``224 224`` (H W) or ``224`` (H = W)."""
    if len(tokens) == 1 and 'x' in tokens[0]:
        tokens = tokens[0].split('x')
    try:
        values = tuple(int(t) for t in tokens)
    except ValueError:
        raise UsageError(f'--shape must be integers (N C H W, H W or S), got {" ".join(tokens)}')
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


def _common_arguments(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog='rep-mm', description=__doc__.split('\n')[0])
    parser.add_argument('--version', action='version', version=f'rep_mm {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    convert = commands.add_parser(
        'convert', help='fold a training-form checkpoint into a deploy-form one',
        description='CONFIG CKPT OUT, or --arch NAME IN OUT for official releases.')
    convert.add_argument('paths', nargs='+', metavar='PATH', help='CONFIG CKPT OUT | IN OUT')
    add_overwrite(convert)
    _common_arguments(convert)
    verify = commands.add_parser(
        'verify', help='check that conversion (or a converted checkpoint) keeps the outputs',
        description='CONFIG CKPT, or --arch NAME IN.')
    verify.add_argument('paths', nargs='+', metavar='PATH', help='CONFIG CKPT | IN')
    verify.add_argument('--deploy-checkpoint', metavar='D',
                        help='a converted checkpoint to compare with CKPT instead of converting')
    _common_arguments(verify)
    commands.add_parser('demo', help='run the demo (arguments go to rep_mm.demo.classification)', add_help=False)
    commands.add_parser('export', add_help=False,
                        help='ONNX through mmdeploy, checked in onnxruntime (rep_mm.deploy)')
    commands.add_parser('quantize', add_help=False,
                        help='int8 post-training quantization in onnxruntime '
                             '(rep_mm.quantization)')
    commands.add_parser('extract-scales', add_help=False,
                        help='scales file from a Hyper-Search checkpoint (rep_mm.cli.extract_scales)')
    commands.add_parser('data', add_help=False,
                        help='write a bundled data set as image folders: data {digits,digit-scenes} '
                        'OUT [options] (see rep-mm data digits --help)')
    return parser


# --------------------------------------------------------------------------------- commands
class _Steps:
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


def _prepare(args: argparse.Namespace, n_paths: int,
             deploy: bool = False) -> Tuple[nn.Module, List[str], Dict[str, Any]]:
    """Build the model of ``--arch`` / the config and load the first checkpoint strictly."""
    if len(args.paths) != n_paths:
        expected = ['CONFIG', 'CKPT', 'OUT'] if not args.arch else ['IN', 'OUT']
        if n_paths < len(expected):  # verify: no OUT
            expected = expected[:n_paths]
        raise UsageError(f'expected {n_paths} path(s) ({" ".join(expected)}'
                         f'{" with --arch" if args.arch else ""}), got {len(args.paths)}: '
                         f'{" ".join(args.paths) or "none"}')
    checkpoint = args.paths[0 if args.arch else 1]
    meta: Dict[str, Any] = dict(source_checkpoint=os.path.abspath(checkpoint))
    if args.arch:
        model = build_arch_model(args.arch, deploy=deploy)
        check_shape_fits(parse_shape(args.shape), model)
        state_dict = extract_state_dict(load_checkpoint_file(checkpoint, args.unsafe_load))
        notes = load_arch_weights(model, state_dict, args.kind)
        meta.update(arch=args.arch, layout='official')
    else:
        model, cfg = build_config_model(args.paths[0])
        check_shape_fits(parse_shape(args.shape), model)
        report = load_weights(model, checkpoint, kind=args.kind, strict=True, target=args.target,
                              allow_unsafe=args.unsafe_load)
        notes = [report.summary()]
        meta.update(config=os.path.abspath(args.paths[0]), layout='model')
        try:
            meta['cfg'] = cfg.pretty_text
        except Exception:  # noqa: BLE001 - the text is informational only
            pass
    return model.eval(), notes, meta


def _check_output_path(out: str, inputs: Sequence[str], overwrite: bool) -> None:
    """Refuse a bad OUT before any work; the input checkpoint's size bounds the output's
    (conversion removes parameters; the meta adds a few KB)."""
    from ..io.files import check_output_path
    checkpoint = inputs[-1] if inputs else None
    size = os.path.getsize(checkpoint) if checkpoint and os.path.isfile(checkpoint) else None
    try:
        notes = check_output_path(out, inputs, overwrite, 'the converted checkpoint',
                                  size_hint=size)
    except (ValueError, OSError) as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UsageError(text) from None
    for note in notes:
        print(f'note: {note}', file=sys.stderr)


def _check_paths_exist(paths: Sequence[Tuple[str, str]]) -> None:
    for what, path in paths:
        if not os.path.exists(path):
            raise UsageError(f'{what} {path!r} does not exist')
        if not os.path.isfile(path):
            raise UsageError(f'{what} {path!r} is not a file')


def _random_input(args: argparse.Namespace) -> Tensor:
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randn(parse_shape(args.shape), generator=generator)


def run_convert(args: argparse.Namespace) -> int:
    """``convert``: load, fold, verify on a random input, write ``{'state_dict', 'meta'}``."""
    n_paths = 2 if args.arch else 3
    check_tolerance(args.tolerance)
    parse_shape(args.shape)
    if len(args.paths) == n_paths:
        _check_paths_exist([('config', p) for p in args.paths[:-2]] +
                           [('checkpoint', args.paths[-2])])
        _check_output_path(args.paths[-1], args.paths[:-1], args.overwrite)
    inputs = _random_input(args)
    steps = _Steps(['load', 'convert + verify', 'save'])
    try:
        model, notes, meta = _prepare(args, n_paths)
        for note in notes:
            print(f'load: {note}')
        params_before = count_parameters(model)
        steps.next('convert + verify')
        report = _reparameterize(model, inputs, args.tolerance)
        params_after = count_parameters(model)
        print(f'convert: {report.summary()}')
        print(f'parameters: {params_before:,} -> {params_after:,} '
              f'({params_after - params_before:+,})')
        if not report.converted and not report.already_deployed:
            raise UsageError('the model has no re-parameterizable block; nothing to convert')
        if not report.passed:
            print(f'FAIL: {"; ".join(report.failure_reasons())}; nothing written')
            return EXIT_FAILED
        steps.next('save')
        state_dict = model.official_state_dict() if args.arch else model.state_dict()
        meta.update(deploy=True, input_shape=list(inputs.shape),
                    max_abs_error=report.max_abs_error, max_rel_error=report.max_rel_error,
                    tolerance=args.tolerance, converted_blocks=len(report.converted),
                    params_before=params_before, params_after=params_after,
                    time=datetime.datetime.now().isoformat(timespec='seconds'))
        from .. import __version__
        meta['rep_mm_version'] = __version__
        out = save_checkpoint_atomic({'state_dict': state_dict, 'meta': meta}, args.paths[-1],
                                     overwrite=args.overwrite)
        print(f'PASS: max abs error {report.max_abs_error:.3g}, max rel error '
              f'{report.max_rel_error:.3g} <= {args.tolerance:g}; wrote {out}')
        return EXIT_OK
    finally:
        steps.close()


def _reparameterize(model: nn.Module, inputs: Tensor, tolerance: float):
    from ..reparam import reparameterize
    return reparameterize(model, verify=lambda m: model_output(m, inputs), tolerance=tolerance)


def run_verify(args: argparse.Namespace) -> int:
    """``verify``: compare the training-form outputs with a converted copy or checkpoint."""
    from ..reparam import compare_model_outputs, reparameterize, verify_equivalence
    check_tolerance(args.tolerance)
    if args.deploy_checkpoint is not None:
        _check_paths_exist([('--deploy-checkpoint', args.deploy_checkpoint)])
    inputs = _random_input(args)
    model, notes, _ = _prepare(args, 1 if args.arch else 2)
    for note in notes:
        print(f'load: {note}')
    if args.deploy_checkpoint is None:
        report = verify_equivalence(model, lambda m: model_output(m, inputs), args.tolerance)
        print(f'convert: {report.summary()}')
        passed = bool(report.passed)
        print(f'{"PASS" if passed else "FAIL"}: '
              f'{"; ".join(report.failure_reasons()) or "outputs agree"} '
              f'(tolerance {args.tolerance:g})')
        return EXIT_OK if passed else EXIT_FAILED
    else:
        with torch.no_grad():
            reference = model_output(model, inputs)
        reparameterize(model)  # the deploy structure, then the checkpoint's fused weights
        deploy_state = extract_state_dict(load_checkpoint_file(args.deploy_checkpoint,
                                                               args.unsafe_load))
        if args.arch:
            notes = load_arch_weights(model, deploy_state, args.kind)
        else:
            notes = [load_weights(model, deploy_state, kind=args.kind, strict=True,
                                  target=args.target).summary()]
        for note in notes:
            print(f'load deploy checkpoint: {note}')
        with torch.no_grad():
            comparison = compare_model_outputs(reference, model_output(model.eval(), inputs),
                                               args.tolerance)
    passed = comparison.passed_at(args.tolerance)
    print(comparison.summary(args.tolerance))
    return EXIT_OK if passed else EXIT_FAILED


DATASET_MODULES = {'digits': 'rep_mm.datasets.digits', 'digit-scenes': 'rep_mm.datasets.digit_scenes'}


def run_data(argv: List[str]) -> int:
    """``rep-mm data NAME ...``: the command line of the data set's module."""
    import importlib
    if not argv or argv[0] not in DATASET_MODULES:
        given = repr(argv[0]) if argv else 'none'
        raise UsageError(f"data: unknown data set {given}; allowed: {', '.join(DATASET_MODULES)}")
    module = importlib.import_module(DATASET_MODULES[argv[0]])
    try:
        return int(module.main(argv[1:]) or 0)
    except SystemExit as exit_:  # argparse errors and --help of the module
        return int(exit_.code or 0)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {}  # filled below the definitions


def run_demo(argv: List[str]) -> int:
    try:
        from ..demo.classification import main as demo_main
    except ModuleNotFoundError as error:
        if error.name != 'rep_mm.demo.classification':
            raise
        raise UsageError('the demo is not available in this installation (no rep_mm.demo.classification)')
    result = demo_main(argv)
    return int(result or 0)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rep-mm`` (and of tools/convert.py, tools/verify.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    try:
        if command == 'demo':
            return run_demo(argv[1:])
        if command == 'extract-scales':
            from .extract_scales import main as extract_scales_main
            return extract_scales_main(argv[1:])
        if command == 'data':
            return run_data(argv[1:])
        if command == 'export':
            from ..deploy import main as export_main
            return export_main(argv[1:])
        if command == 'quantize':
            from ..quantization import main as quantize_main
            return quantize_main(argv[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help, --version, argparse usage errors
            return int(exit_.code or 0)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        return COMMANDS[args.command](args)
    except ReparamError as error:  # a block whose fused form is not finite: a failed check
        print(f'rep-mm {command}: FAIL: {error}', file=sys.stderr)
        return EXIT_FAILED
    except (UsageError, CheckpointError, FileNotFoundError, FileExistsError,
            IsADirectoryError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f'rep-mm {command}: error: {message}', file=sys.stderr)
        return EXIT_BAD_INPUT


COMMANDS.update(convert=run_convert, verify=run_verify)


if __name__ == '__main__':
    sys.exit(main())
