"""``python -m rep_mm.quantization.qat CONFIG CHECKPOINT OUT``: the deploy-form checkpoint of a
QAT training checkpoint (what ``rep_mm.QATHook`` writes as ``qat_deploy.pth`` after training,
for any ``epoch_N.pth`` / ``best_*.pth`` of the run)."""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from ...cli.args import add_cfg_options, add_overwrite
from .errors import QATError

__all__ = ['main', 'build_parser']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='rep-mm qat-fold',
        description='Fold a QAT checkpoint (config type rep_mm.QATModel) into a plain '
                    'deploy-form checkpoint for the model config with deploy=True.')
    parser.add_argument('config', help='the QAT config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a Runner checkpoint of that QAT run')
    parser.add_argument('out', help='the deploy-form checkpoint to write')
    add_overwrite(parser)
    add_cfg_options(parser, default=None)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit 0 on success, 2 on bad input (one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    import rep_mm  # noqa: F401  registers the models
    from ...io import CheckpointError
    from .model import fold_checkpoint
    for label, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            print(f'error: {label} {path!r} is not a file', file=sys.stderr)
            return 2
    if osp.exists(args.out) and not args.overwrite:
        print(f'error: {args.out!r} exists; pass --overwrite to replace it', file=sys.stderr)
        return 2
    try:
        info = fold_checkpoint(args.config, args.checkpoint, args.out, args.cfg_options,
                               overwrite=args.overwrite)
    except (QATError, CheckpointError, RuntimeError) as error:
        print(f'error: {str(error).splitlines()[0]}', file=sys.stderr)
        return 2
    print(f'{args.out}: deploy-form checkpoint ({len(info["folded"])} module(s) folded)')
    return 0
