"""The ``rep-mm`` command: one table of sub-commands, each run with its own arguments.

Sub-commands (:data:`COMMANDS`; ``rep-mm COMMAND --help`` for each)::

    rep-mm convert CONFIG CKPT OUT [--shape 1x3x224x224] [--tolerance 1e-5] [--overwrite]
    rep-mm convert --arch RepVGG-A0 IN OUT          # an official release, no config needed
    rep-mm verify CONFIG CKPT [--deploy-checkpoint D] [--shape ...] [--tolerance 1e-5]
    rep-mm verify --arch RepVGG-A0 IN [--deploy-checkpoint D]
    rep-mm demo ...                                  # rep_mm.demo.run
    rep-mm extract-scales HS_CKPT OUT --config CFG   # rep_mm.cli.extract_scales
    rep-mm export CONFIG [CKPT] --work-dir DIR ...   # rep_mm.deploy (ONNX)
    rep-mm quantize CONFIG [CKPT] --work-dir DIR ... # rep_mm.quantization (int8)
    rep-mm qat-fold CONFIG CKPT OUT                  # rep_mm.quantization.qat
    rep-mm fold-stock CONFIG CKPT OUT                # rep_mm.integrations.stock_backbones
    rep-mm data {digits,digit-scenes} OUT ...        # a bundled data set as image folders

Exit codes: 0 success, 1 a check failed (nothing written), 2 bad input (nothing written);
errors are one line on stderr, ``rep-mm COMMAND: error: ...`` (see :mod:`rep_mm.cli.args`).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

# re-exported: the models the commands build, the exit codes
from ..integrations.official import OfficialClassifier, arch_names, build_arch_model  # noqa: F401
from .args import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError, parse_or_exit_code  # noqa: F401
from .common import build_config_model, report_errors  # noqa: F401

__all__ = ['COMMANDS', 'Command', 'main', 'build_parser', 'run_data', 'run_demo',
           'build_config_model', 'build_arch_model', 'OfficialClassifier', 'arch_names',
           'EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'UsageError']

DATASET_MODULES = {'digits': 'rep_mm.datasets.digits',
                   'digit-scenes': 'rep_mm.datasets.digit_scenes'}


@dataclass(frozen=True)
class Command:
    """A sub-command: its one-line help and ``run(argv) -> exit code`` (imports lazily)."""

    help: str
    run: Callable[[List[str]], int]


def run_data(argv: List[str]) -> int:
    """``rep-mm data NAME ...``: the command line of the data set's module."""
    if not argv or argv[0] not in DATASET_MODULES:
        given = repr(argv[0]) if argv else 'none'
        raise UsageError(f"data: unknown data set {given}; allowed: {', '.join(DATASET_MODULES)}")
    module = importlib.import_module(DATASET_MODULES[argv[0]])
    try:
        return int(module.main(argv[1:]) or 0)
    except SystemExit as exit_:  # argparse errors and --help of the module
        return int(exit_.code or 0)


def run_demo(argv: List[str]) -> int:
    """``rep-mm demo ...``: :func:`rep_mm.demo.run.main`."""
    try:
        from ..demo.run import main as demo_main
    except ModuleNotFoundError as error:
        if error.name != 'rep_mm.demo.run':
            raise
        raise UsageError('the demo is not available in this installation '
                         '(no rep_mm.demo.run)') from None
    return int(demo_main(argv) or 0)


def _convert(argv: List[str]) -> int:
    from .convert import main as convert_main
    return convert_main(argv)


def _verify(argv: List[str]) -> int:
    from .verify import main as verify_main
    return verify_main(argv)


def _extract_scales(argv: List[str]) -> int:
    from .extract_scales import main as extract_scales_main
    return extract_scales_main(argv)


def _export(argv: List[str]) -> int:
    from ..deploy import main as export_main
    return export_main(argv)


def _quantize(argv: List[str]) -> int:
    from ..quantization import main as quantize_main
    return quantize_main(argv)


def _qat_fold(argv: List[str]) -> int:
    from ..quantization.qat.cli import main as qat_fold_main
    return qat_fold_main(argv)


def _fold_stock(argv: List[str]) -> int:
    from ..integrations.stock_backbones.cli import main as fold_stock_main
    return fold_stock_main(argv)


COMMANDS: Dict[str, Command] = {
    'convert': Command('fold a training-form checkpoint into a deploy-form one', _convert),
    'verify': Command('check that conversion (or a converted checkpoint) keeps the outputs',
                      _verify),
    'demo': Command('run the demo (arguments go to rep_mm.demo.run)', run_demo),
    'export': Command('ONNX through mmdeploy, checked in onnxruntime (rep_mm.deploy)', _export),
    'quantize': Command('int8 post-training quantization in onnxruntime (rep_mm.quantization)',
                        _quantize),
    'qat-fold': Command('deploy-form checkpoint of a QAT run (rep_mm.quantization.qat)',
                        _qat_fold),
    'fold-stock': Command('stock-model checkpoint of a backbone trained with swapped-in '
                          'ACB/DBB/OREPA blocks (rep_mm.integrations.stock_backbones)',
                          _fold_stock),
    'extract-scales': Command('scales file from a Hyper-Search checkpoint '
                              '(rep_mm.cli.extract_scales)', _extract_scales),
    'data': Command('write a bundled data set as image folders: data {digits,digit-scenes} '
                    'OUT [options] (see rep-mm data digits --help)', run_data),
}


def build_parser() -> argparse.ArgumentParser:
    """``rep-mm [--version] [--help] COMMAND ...``: lists :data:`COMMANDS` in its help."""
    from .. import __version__
    listing = '\n'.join(f'  {name:<16}{command.help}' for name, command in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog='rep-mm', description=__doc__.split('\n')[0],
        epilog=f'commands:\n{listing}\n\nrep-mm COMMAND --help: the options of COMMAND',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--version', action='version', version=f'rep_mm {__version__}')
    parser.add_argument('command', nargs='?', choices=list(COMMANDS), metavar='COMMAND',
                        help=f'one of: {", ".join(COMMANDS)}')
    parser.add_argument('arguments', nargs=argparse.REMAINDER, metavar='...',
                        help='the arguments of COMMAND')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rep-mm`` (and of tools/convert.py, verify.py, deploy.py,
    extract_scales.py): the sub-command's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        return report_errors(f'rep-mm {name}', lambda: COMMANDS[name].run(argv[1:]))
    parser = build_parser()
    args, code = parse_or_exit_code(parser, argv)  # --help, --version, an unknown command
    if args is None:
        return code
    parser.print_help()  # no command
    return EXIT_BAD_INPUT


if __name__ == '__main__':
    sys.exit(main())
