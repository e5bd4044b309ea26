"""Extract RepOptimizer scales from a Hyper-Search checkpoint into a scales file for a target.

``rep-mm extract-scales HS_CKPT OUT --config TARGET_CONFIG [--overwrite]``
(also ``python tools/extract_scales.py ...``):

1. reads the Hyper-Search checkpoint with ``weights_only=True`` (Runner checkpoints through
   rep_mm's allow-list; a bare state_dict works too) and keeps its trainable scales
   (``stageK.i.scale_{conv,1x1,identity}.weight`` of RepOpt-VGG,
   ``blocks.i.j.ghost{1,2}.fusion_scale.weight`` / ``cheap_operation.1.weight`` of
   RepOpt-GhostNet), without the ``backbone.`` / ``module.`` prefixes;
2. builds the model of ``TARGET_CONFIG`` (its RepOpt backbone is switched to ``mode='target'``,
   so the hs config itself may be given) and matches the scales to it BY NAME through
   :func:`rep_mm.optim.build_handler`: a missing or extra key or a wrong shape is an error that
   names them, and nothing is written;
3. writes ``{name: float32 tensor (C_out,)}`` in the target's block order, atomically (temp file
   + rename), the same layout as the released ``RepOpt-VGG-*-scales.pth``. It never writes over
   its input checkpoint or config, and replaces an existing ``OUT`` only with ``--overwrite``.

Exit codes: 0 written, 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .args import add_overwrite, add_unsafe_load, parse_or_exit_code, run_reporting_errors

__all__ = ['extract_scales_file', 'main']


def _target_model(cfg, config: str):
    """The model of the loaded ``cfg`` (file ``config``) with its RepOpt backbone in target
    form; what the config asks for that cannot be built is a ``ConfigError``."""
    from .common import build_model_of_config

    model_cfg = cfg.model
    backbone = model_cfg.get('backbone', model_cfg)
    if 'mode' in backbone or 'RepOpt' in str(backbone.get('type', '')):
        backbone['mode'] = 'target'
    return build_model_of_config(cfg, config, model_cfg)


def extract_scales_file(hs_checkpoint: str, out: str, config: str,
                        overwrite: bool = False, allow_unsafe: bool = False) -> Dict:
    """Extract, match to the target model of ``config``, write ``out`` (module docstring).

    Returns:
        dict: ``out``, ``num_scales``, ``num_blocks`` and ``keys`` (the target's names).

    Raises:
        rep_mm.io.OutputPathError / FileExistsError / IsADirectoryError / ...: a bad output
            path (:func:`rep_mm.io.check_output_path`; never the input);
        rep_mm.io.CheckpointError: a missing or unreadable checkpoint;
        rep_mm.io.ConfigError: a missing or unreadable config, or one whose model cannot be
            built;
        rep_mm.optim.ScalesError: the scales do not fit the target (names them).
    """
    from ..io import (CheckpointError, ConfigError, check_output_path, load_config_file,
                      save_checkpoint_atomic)
    from ..optim import build_handler, extract_scales

    if not os.path.isfile(hs_checkpoint):
        raise CheckpointError(f'Hyper-Search checkpoint {hs_checkpoint!r} does not exist or '
                              f'is not a file')
    if not os.path.isfile(config):
        raise ConfigError(f'config {config!r} does not exist or is not a file')
    # the scales are a few KB per block: the checkpoint's size is a safe upper bound
    for note in check_output_path(out, (hs_checkpoint, config), overwrite, 'the scales',
                                  size_hint=min(os.path.getsize(hs_checkpoint), 1 << 26)):
        print(f'note: {note}', file=sys.stderr)
    cfg = load_config_file(config)  # a syntax error / unknown plugin: before reading weights
    if 'model' not in cfg:
        raise ConfigError(f'config {config!r} has no `model` field')
    scales = extract_scales(hs_checkpoint, allow_unsafe=allow_unsafe)
    handler = build_handler(_target_model(cfg, config), scales)
    matched: 'OrderedDict[str, Tensor]' = OrderedDict(
        (k, v.detach().to('cpu', torch.float32).contiguous().clone())
        for k, v in handler.scales.items())
    save_checkpoint_atomic(matched, out, overwrite=overwrite)
    return dict(out=os.path.abspath(out), num_scales=len(matched),
                num_blocks=len(handler.blocks), keys=list(matched))


def build_parser() -> argparse.ArgumentParser:
    """The options of ``rep-mm extract-scales``."""
    parser = argparse.ArgumentParser(
        prog='rep-mm extract-scales',
        description='Write the scales of a Hyper-Search checkpoint as a scales file matched by '
                    'name to a target RepOpt model.')
    parser.add_argument('checkpoint', help='Hyper-Search checkpoint (Runner .pth or state_dict)')
    parser.add_argument('out', help='the scales file to write')
    parser.add_argument('--config', required=True,
                        help='config of the target model (an hs config works too: its RepOpt '
                             'backbone is switched to mode="target")')
    add_overwrite(parser)
    add_unsafe_load(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``rep-mm extract-scales ARGS``: the exit code (0 written, 2 bad input)."""
    from ..io import CheckpointError, ConfigError, NoSpaceError, OutputPathError
    from ..optim import ScalesError
    args, code = parse_or_exit_code(build_parser(), argv)  # --help (0), usage errors (2)
    if args is None:
        return code
    summary, code = run_reporting_errors(
        'rep-mm extract-scales',
        lambda: extract_scales_file(args.checkpoint, args.out, args.config, args.overwrite,
                                    allow_unsafe=args.unsafe_load),
        bad_input=(CheckpointError, ConfigError, ScalesError, OutputPathError, FileExistsError,
                   IsADirectoryError, NotADirectoryError, PermissionError, NoSpaceError))
    if code is not None:
        return code
    print(f"wrote {summary['num_scales']} scales of {summary['num_blocks']} blocks to "
          f"{summary['out']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
