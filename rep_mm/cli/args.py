"""What rep_mm's command-line tools share: the exit codes, :class:`UsageError`, the options
several of them take (``--overwrite``, ``--unsafe-load``, ``--random-init``, ``--cfg-options``),
the output-path check and the parse / run / report-the-error steps of their ``main``.

Errors are reported in one format: ``PROG: error: MESSAGE`` on stderr with exit code 2 (bad
input: only dedicated errors such as :class:`UsageError` or :class:`rep_mm.io.CheckpointError`,
never a bare ``KeyError`` / ``ValueError``), ``PROG: FAIL: MESSAGE`` with exit code 1 (a check
failed); anything else propagates with its traceback.

Used by ``rep-mm`` (:mod:`rep_mm.cli.dispatch`), ``rep-mm export`` (:mod:`rep_mm.deploy.cli`),
``rep-mm quantize`` (:mod:`rep_mm.quantization.cli`), ``rep-mm extract-scales``
(:mod:`rep_mm.cli.extract_scales`), ``python -m rep_mm.integrations.stock_backbones`` and
``python -m rep_mm.quantization.qat``. Importing it is cheap (no torch, no mmengine).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterable, NoReturn, Optional, Sequence, Tuple, Type, Union

__all__ = ['EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'UsageError', 'add_overwrite',
           'add_unsafe_load', 'add_work_dir_inputs', 'add_random_init', 'add_cfg_options',
           'check_output', 'parse_or_exit_code', 'run_reporting_errors', 'exit_bad_input']

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

Errors = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


class UsageError(ValueError):
    """Bad command-line input found by an explicit check; reported as ``PROG: error: ...``
    with exit code 2."""


def add_overwrite(parser: argparse.ArgumentParser,
                  help: str = 'replace an existing OUT') -> None:  # noqa: A002
    """``--overwrite`` (store_true): replace what an earlier run wrote."""
    parser.add_argument('--overwrite', action='store_true', help=help)


def add_unsafe_load(parser: argparse.ArgumentParser,
                    help: str = 'unpickle the checkpoint fully (weights_only=False): '  # noqa: A002
                                'trusted files only',
                    legacy_alias: bool = True) -> None:
    """``--unsafe-load`` (``args.unsafe_load``), with the older spelling
    ``--allow-unsafe-checkpoint`` unless ``legacy_alias`` is False: load checkpoints with
    ``weights_only=False`` (see :func:`rep_mm.io.load_checkpoint_file`)."""
    names = ('--unsafe-load', '--allow-unsafe-checkpoint') if legacy_alias else ('--unsafe-load',)
    parser.add_argument(*names, dest='unsafe_load', action='store_true', help=help)


def add_work_dir_inputs(parser: argparse.ArgumentParser, config_help: str,
                        checkpoint_help: str, work_dir_help: str) -> None:
    """``CONFIG [CHECKPOINT] --work-dir DIR``: the inputs of the tools that write a work
    directory (``rep-mm export``, ``rep-mm quantize``); the checkpoint may be left out for
    ``--random-init`` (see :func:`add_random_init`)."""
    parser.add_argument('config', help=config_help)
    parser.add_argument('checkpoint', nargs='?', help=checkpoint_help)
    parser.add_argument('--work-dir', required=True, help=work_dir_help)


def add_random_init(parser: argparse.ArgumentParser) -> None:
    """``--random-init``: no checkpoint, random weights and randomised BN statistics."""
    parser.add_argument('--random-init', action='store_true',
                        help='no checkpoint: random weights, randomised BN statistics (smoke)')


def add_cfg_options(parser: argparse.ArgumentParser, help: str = 'config overrides',  # noqa: A002
                    **kwargs: Any) -> None:
    """``--cfg-options KEY=VALUE ...`` (mmengine's ``DictAction``)."""
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=help, **kwargs)


def check_output(out: str, inputs: Iterable[str], overwrite: bool, what: str,
                 size_hint: Optional[int] = None) -> None:
    """:func:`rep_mm.io.check_output_path` before any work, its notes printed to stderr; a
    destination that cannot or may not be written is a :class:`UsageError`."""
    from ..io import NoSpaceError, OutputPathError, check_output_path
    refused = (OutputPathError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, NoSpaceError)
    try:
        notes = check_output_path(out, inputs, overwrite, what, size_hint=size_hint)
    except refused as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UsageError(text) from None
    for note in notes:
        print(f'note: {note}', file=sys.stderr)


def parse_or_exit_code(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]
                       ) -> Tuple[Optional[argparse.Namespace], Optional[int]]:
    """``(args, None)``, or ``(None, code)`` when argparse exits: 0 after ``--help``, 2 on a
    usage error (its message already on stderr)."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as exit_:
        return None, int(exit_.code or 0)


def run_reporting_errors(prog: str, call: Callable[[], Any], bad_input: Errors,
                         failed: Errors = ()) -> Tuple[Any, Optional[int]]:
    """``(call(), None)``, or ``(None, code)`` after one line on stderr: ``PROG: error: ...``
    and :data:`EXIT_BAD_INPUT` for a ``bad_input`` exception, ``PROG: FAIL: ...`` and
    :data:`EXIT_FAILED` for a ``failed`` one (``bad_input`` is matched first)."""
    try:
        return call(), None
    except bad_input as error:
        print(f'{prog}: error: {error}', file=sys.stderr)
        return None, EXIT_BAD_INPUT
    except failed as error:
        print(f'{prog}: FAIL: {error}', file=sys.stderr)
        return None, EXIT_FAILED


def exit_bad_input(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` and exit with :data:`EXIT_BAD_INPUT`: for scripts whose
    ``main`` exits instead of returning a code (``tools/train.py``, ``tools/test.py``)."""
    print(f'{prog}: error: {message}', file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)
