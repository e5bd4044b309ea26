"""``rep-mm convert``: fold a training-form checkpoint into a deploy-form one, verified.

``rep-mm convert CONFIG CKPT OUT [--shape 1x3x224x224] [--tolerance 1e-5] [--overwrite]`` or
``rep-mm convert --arch RepVGG-A0 IN OUT`` (an official release, no config needed). The
checkpoint loads strictly into the training-form model; the model is converted, its outputs on
a random input compared with the training form's, and OUT written (atomically, never over an
input) as ``{'state_dict', 'meta'}`` with ``meta['rep_mm_form'] = 'deploy'``.

Exit codes: 0 written, 1 verification failed (nothing written), 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any, Dict, List, Optional

from torch import Tensor, nn

from .args import (EXIT_FAILED, EXIT_OK, UsageError, add_overwrite, check_output,
                   parse_or_exit_code)
from .common import (Steps, add_model_arguments, check_path_count, check_paths_exist,
                     check_tolerance, count_parameters, load_model, model_output, parse_shape,
                     random_input, report_errors)

__all__ = ['build_parser', 'run', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The options of ``rep-mm convert``."""
    parser = argparse.ArgumentParser(
        prog='rep-mm convert', description='Fold a training-form checkpoint into a deploy-form '
                                           'one: CONFIG CKPT OUT, or --arch NAME IN OUT for '
                                           'official releases.')
    parser.add_argument('paths', nargs='+', metavar='PATH', help='CONFIG CKPT OUT | IN OUT')
    add_overwrite(parser)
    add_model_arguments(parser)
    return parser


def _check_inputs(args: argparse.Namespace) -> None:
    """Every check that needs no model, before any work: numbers, paths, the output."""
    check_tolerance(args.tolerance)
    parse_shape(args.shape)
    check_path_count(args, 2 if args.arch else 3)
    check_paths_exist([('config', p) for p in args.paths[:-2]] +
                      [('checkpoint', args.paths[-2])])
    # conversion removes parameters; the meta adds a few KB: the input bounds the output
    checkpoint = args.paths[-2]
    check_output(args.paths[-1], args.paths[:-1], args.overwrite, 'the converted checkpoint',
                 size_hint=os.path.getsize(checkpoint))


def _output_meta(meta: Dict[str, Any], report, inputs: Tensor, tolerance: float,
                 params: List[int]) -> Dict[str, Any]:
    """The ``meta`` of the converted checkpoint (its form tagged ``'deploy'``)."""
    from .. import __version__
    from ..io import tag_form
    meta.update(deploy=True, input_shape=list(inputs.shape),
                max_abs_error=report.max_abs_error, max_rel_error=report.max_rel_error,
                tolerance=tolerance, converted_blocks=len(report.converted),
                params_before=params[0], params_after=params[1],
                time=datetime.datetime.now().isoformat(timespec='seconds'),
                rep_mm_version=__version__)
    return tag_form(meta, 'deploy')


def _reparameterize(model: nn.Module, inputs: Tensor, tolerance: float):
    from ..reparam import reparameterize
    return reparameterize(model, verify=lambda m: model_output(m, inputs), tolerance=tolerance)


def run(args: argparse.Namespace) -> int:
    """Load, fold, verify on a random input, write ``{'state_dict', 'meta'}``."""
    from ..io import save_checkpoint_atomic
    _check_inputs(args)
    inputs = random_input(args)
    steps = Steps(['load', 'convert + verify', 'save'])
    try:
        model, notes, meta = load_model(args, convert=False)
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
        meta = _output_meta(meta, report, inputs, args.tolerance, [params_before, params_after])
        out = save_checkpoint_atomic({'state_dict': state_dict, 'meta': meta}, args.paths[-1],
                                     overwrite=args.overwrite)
        print(f'PASS: max abs error {report.max_abs_error:.3g}, max rel error '
              f'{report.max_rel_error:.3g} <= {args.tolerance:g}; wrote {out}')
        return EXIT_OK
    finally:
        steps.close()


def main(argv: Optional[List[str]] = None) -> int:
    """``rep-mm convert ARGS``: the exit code (0 written, 1 failed check, 2 bad input)."""
    args, code = parse_or_exit_code(build_parser(), sys.argv[1:] if argv is None else argv)
    if args is None:
        return code
    return report_errors('rep-mm convert', lambda: run(args))
