"""``python -m rep_mm.integrations.stock_backbones CONFIG CHECKPOINT OUT``: fold a training
checkpoint of a ``rep_mm.ReparamWrapped`` config into a stock checkpoint.

Every input and the destination are checked before any work; bad input exits with
:data:`rep_mm.cli.args.EXIT_BAD_INPUT` (2) and one ``PROG: error: ...`` line on stderr.
"""
import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ...cli.args import (EXIT_OK, add_overwrite, add_unsafe_load, parse_or_exit_code,
                         run_reporting_errors)
from .folding import export_stock_checkpoint

__all__ = ['PROG', 'build_parser', 'fold_checkpoint_file', 'main']

PROG = 'rep-mm fold-stock'


def build_parser() -> argparse.ArgumentParser:
    """``CONFIG CHECKPOINT OUT [--overwrite] [--unsafe-load]``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Fold a checkpoint trained with rep_mm.ReparamWrapped blocks into the stock '
                    'layers; the output loads into the stock config with strict=True.')
    parser.add_argument('config', help='the training config (with rep_mm.ReparamWrapped)')
    parser.add_argument('checkpoint', help='training checkpoint (Runner or plain state dict)')
    parser.add_argument('out', help='output checkpoint (stock keys)')
    add_overwrite(parser, 'replace an existing output')
    add_unsafe_load(parser)
    return parser


def _read_inputs(config: str, checkpoint: str, out: str, overwrite: bool,
                 unsafe_load: bool) -> Tuple[Any, Dict[str, Tensor], List[str]]:
    """The config, the checkpoint's state dict and the notes on ``out``, all checked.

    Raises:
        CheckpointError, ValueError, OSError: a missing / unreadable input or an output that
            cannot be written (before anything is built or written).
    """
    from ...io import CheckpointError, extract_state_dict, load_checkpoint_file
    from ...io import check_output_path, load_config_file
    if not os.path.isfile(checkpoint):
        raise CheckpointError(f'checkpoint {checkpoint!r} does not exist or is not a file')
    notes = check_output_path(out, (checkpoint, config), overwrite, 'the folded checkpoint',
                              size_hint=os.path.getsize(checkpoint))
    cfg = load_config_file(config)
    if 'model' not in cfg:
        raise ValueError(f'config {config!r} has no `model` field')
    state = extract_state_dict(load_checkpoint_file(checkpoint, unsafe_load))
    return cfg, state, notes


def _load_strictly(model: nn.Module, state: Dict[str, Tensor], checkpoint: str,
                   config: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is bad input."""
    from ...io import CheckpointError
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # torch's missing / unexpected / size-mismatch report
        raise CheckpointError(f'checkpoint {checkpoint!r} does not fit the model of '
                              f'{config!r}: {" ".join(str(error).split())[:600]}') from None


def fold_checkpoint_file(config: str, checkpoint: str, out: str, overwrite: bool = False,
                         unsafe_load: bool = False) -> str:
    """Build ``config``'s model, load ``checkpoint`` strictly, fold, write ``out``.

    Returns the written path. The ``note:`` lines on the output path go to stderr.

    Raises:
        CheckpointError, ValueError, OSError: bad input (see :func:`_read_inputs`), a
            checkpoint that does not fit the model, or a model with nothing to fold.
    """
    from ..mm_build import build_model
    cfg, state, notes = _read_inputs(config, checkpoint, out, overwrite, unsafe_load)
    for note in notes:
        print(f'note: {note}', file=sys.stderr)
    model = build_model(cfg, default_scope='mmengine')
    _load_strictly(model, state, checkpoint, config)
    return export_stock_checkpoint(model.eval(), out, overwrite=overwrite,
                                   meta=dict(config=config, source=checkpoint))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (module docstring); returns the exit code."""
    from ...io import CheckpointError
    args, code = parse_or_exit_code(build_parser(), argv)  # --help (0), usage errors (2)
    if args is None:
        return code
    _, code = run_reporting_errors(
        PROG, lambda: fold_checkpoint_file(args.config, args.checkpoint, args.out,
                                           args.overwrite, args.unsafe_load),
        bad_input=(CheckpointError, ValueError, OSError))
    if code is not None:
        return code
    print(f'wrote {args.out}')
    return EXIT_OK
