"""``rep-mm verify``: check that conversion (or a converted checkpoint) keeps the outputs.

``rep-mm verify CONFIG CKPT [--deploy-checkpoint D] [--shape ...] [--tolerance 1e-5]`` or
``rep-mm verify --arch RepVGG-A0 IN [--deploy-checkpoint D]``. CKPT loads strictly into the
training-form model; without D a converted copy is compared with it, with D the model is
converted and D's weights loaded (D must be in deploy form) and compared.

Exit codes: 0 outputs agree, 1 they do not, 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from .args import EXIT_FAILED, EXIT_OK, parse_or_exit_code
from .common import (add_model_arguments, check_path_count, check_paths_exist,
                     check_tolerance, load_model, model_output, random_input, report_errors)

__all__ = ['build_parser', 'run', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The options of ``rep-mm verify``."""
    parser = argparse.ArgumentParser(
        prog='rep-mm verify', description='Check that conversion (or a converted checkpoint) '
                                          'keeps the outputs: CONFIG CKPT, or --arch NAME IN.')
    parser.add_argument('paths', nargs='+', metavar='PATH', help='CONFIG CKPT | IN')
    parser.add_argument('--deploy-checkpoint', metavar='D',
                        help='a converted checkpoint to compare with CKPT instead of converting')
    add_model_arguments(parser)
    return parser


def _verify_conversion(model, inputs, tolerance: float) -> int:
    """Convert a copy of ``model`` and compare; the exit code."""
    from ..reparam import verify_equivalence
    report = verify_equivalence(model, lambda m: model_output(m, inputs), tolerance)
    print(f'convert: {report.summary()}')
    passed = bool(report.passed)
    print(f'{"PASS" if passed else "FAIL"}: '
          f'{"; ".join(report.failure_reasons()) or "outputs agree"} (tolerance {tolerance:g})')
    return EXIT_OK if passed else EXIT_FAILED


def _verify_deploy_checkpoint(model, inputs, args: argparse.Namespace) -> int:
    """Compare ``model``'s outputs with those of the deploy-form checkpoint D; the exit code."""
    from ..integrations.official import load_arch_weights
    from ..io import load_into
    from ..reparam import compare_model_outputs
    with torch.no_grad():
        reference = model_output(model, inputs)
    if args.arch:  # the model is converted first, then D's fused weights loaded
        _, notes = load_arch_weights(model, args.deploy_checkpoint, args.kind, require='deploy',
                                     allow_unsafe=args.unsafe_load)
    else:
        notes = [load_into(model, args.deploy_checkpoint, kind=args.kind, target=args.target,
                           require='deploy', allow_unsafe=args.unsafe_load).summary()]
    for note in notes:
        print(f'load deploy checkpoint: {note}')
    with torch.no_grad():
        comparison = compare_model_outputs(reference, model_output(model.eval(), inputs),
                                           args.tolerance)
    print(comparison.summary(args.tolerance))
    return EXIT_OK if comparison.passed_at(args.tolerance) else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    """Load CKPT, then compare it with its conversion or with D."""
    check_tolerance(args.tolerance)
    if args.deploy_checkpoint is not None:
        check_paths_exist([('--deploy-checkpoint', args.deploy_checkpoint)])
    inputs = random_input(args)
    check_path_count(args, 1 if args.arch else 2)
    model, notes, _ = load_model(args, convert=False)
    for note in notes:
        print(f'load: {note}')
    if args.deploy_checkpoint is None:
        return _verify_conversion(model, inputs, args.tolerance)
    return _verify_deploy_checkpoint(model, inputs, args)


def main(argv: Optional[List[str]] = None) -> int:
    """``rep-mm verify ARGS``: the exit code (0 agree, 1 differ, 2 bad input)."""
    args, code = parse_or_exit_code(build_parser(), sys.argv[1:] if argv is None else argv)
    if args is None:
        return code
    return report_errors('rep-mm verify', lambda: run(args))
