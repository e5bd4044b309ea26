"""``rep-mm quantize``: argument parsing, the printed summary, exit codes (0 ok, 1 failed,
2 bad input)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .errors import QuantizationError, QuantizationFailed

__all__ = ['EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'build_parser', 'main']

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser():
    import argparse

    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        prog='rep-mm quantize',
        description='Fold every re-param block, export ONNX through mmdeploy, calibrate on '
                    "the config's train set, quantize to int8 (onnxruntime static QDQ), "
                    'evaluate fp32 and int8 on the val set, time both. Exit codes: 0 done, '
                    '1 failed, 2 bad input.')
    parser.add_argument('config', help='mmpretrain / mmseg config using rep_mm')
    parser.add_argument('checkpoint', nargs='?',
                        help='training-form or converted checkpoint (or --random-init / --onnx)')
    parser.add_argument('--work-dir', required=True,
                        help='output directory (export files, end2end_int8.onnx, '
                             'quant_report.json)')
    parser.add_argument('--calib', type=int, default=512,
                        help='number of calibration images from the train set (default 512)')
    parser.add_argument('--per-tensor', action='store_true',
                        help='per-tensor int8 weights (default: per output channel)')
    parser.add_argument('--deploy-config', help='mmdeploy deploy config (default: configs/'
                                                'deploy/<task>_onnxruntime_static.py)')
    parser.add_argument('--random-init', action='store_true',
                        help='no checkpoint: random weights, randomised BN statistics (smoke)')
    parser.add_argument('--onnx', help='quantize this folded fp32 end2end.onnx of the config '
                                       'instead of exporting')
    parser.add_argument('--op-types', help='comma-separated op types to quantize (default: '
                                           'all onnxruntime can)')
    parser.add_argument('--int8-head', action='store_true',
                        help='quantize the head too (default: from the last Conv / Gemm to the '
                             'outputs stays float, so logits do not tie)')
    parser.add_argument('--threads', type=int, default=1,
                        help='onnxruntime threads for the latency numbers (default 1)')
    parser.add_argument('--runs', type=int, default=100,
                        help='interleaved runs per graph for the latency medians (default 100)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='config overrides, e.g. data_root=DIR')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace outputs of an earlier run in the work dir')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the checkpoint fully (weights_only=False): trusted only')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of --random-init and of the calibration subset')
    parser.add_argument('--quiet', action='store_true', help='no export progress output')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``rep-mm quantize``: returns the exit code."""
    from ..checkpoint import CheckpointError
    from ..deploy import DeployError, ExportFailed
    from .pipeline import quantize
    from .report import summary_lines
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, usage errors (argparse exits 2 on those)
        return int(exit_.code or 0)
    op_types = [op.strip() for op in args.op_types.split(',') if op.strip()] \
        if args.op_types else None
    try:
        data = quantize(args.config, args.work_dir, checkpoint=args.checkpoint,
                        random_init=args.random_init, onnx=args.onnx, calib=args.calib,
                        per_tensor=args.per_tensor, deploy_config=args.deploy_config,
                        op_types=op_types, cfg_options=args.cfg_options, threads=args.threads,
                        runs=args.runs, seed=args.seed, overwrite=args.overwrite,
                        unsafe_load=args.unsafe_load, int8_head=args.int8_head,
                        quiet=args.quiet)
    except (QuantizationError, DeployError, CheckpointError, FileExistsError) as error:
        print(f'rep-mm quantize: error: {error}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except (QuantizationFailed, ExportFailed) as error:
        print(f'rep-mm quantize: FAIL: {error}', file=sys.stderr)
        return EXIT_FAILED
    for line in summary_lines(data):
        print(line)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
