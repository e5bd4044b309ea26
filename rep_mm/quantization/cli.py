"""``rep-mm quantize``: argument parsing, the printed summary, exit codes (0 ok, 1 failed,
2 bad input)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..cli.args import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_cfg_options, add_overwrite,
                        add_random_init, add_unsafe_load, add_work_dir_inputs,
                        parse_or_exit_code, run_reporting_errors)
from .errors import QuantizationError, QuantizationFailed

__all__ = ['EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'build_parser', 'main']



def build_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog='rep-mm quantize',
        description='Fold every re-param block, export ONNX through mmdeploy, calibrate on '
                    "the config's train set, quantize to int8 (onnxruntime static QDQ), "
                    'evaluate fp32 and int8 on the val set, time both. Exit codes: 0 done, '
                    '1 failed, 2 bad input.')
    add_work_dir_inputs(
        parser, 'mmpretrain / mmseg config using rep_mm',
        'training-form or converted checkpoint (or --random-init / --onnx)',
        'output directory (export files, end2end_int8.onnx, quant_report.json)')
    parser.add_argument('--calib', type=int, default=512,
                        help='number of calibration images from the train set (default 512)')
    parser.add_argument('--per-tensor', action='store_true',
                        help='per-tensor int8 weights (default: per output channel)')
    parser.add_argument('--deploy-config', help='mmdeploy deploy config (default: configs/'
                                                'deploy/<task>_onnxruntime_static.py)')
    add_random_init(parser)
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
    add_cfg_options(parser, 'config overrides, e.g. data_root=DIR')
    add_overwrite(parser, 'replace outputs of an earlier run in the work dir')
    add_unsafe_load(parser, 'unpickle the checkpoint fully (weights_only=False): trusted only',
                    legacy_alias=False)
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of --random-init and of the calibration subset')
    parser.add_argument('--quiet', action='store_true', help='no export progress output')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``rep-mm quantize``: returns the exit code."""
    from ..io import CheckpointError
    from ..deploy import DeployError, ExportFailed
    from .pipeline import quantize
    from .report import summary_lines
    args, code = parse_or_exit_code(build_parser(), argv)  # --help, usage errors (exit 2)
    if args is None:
        return code
    op_types = [op.strip() for op in args.op_types.split(',') if op.strip()] \
        if args.op_types else None
    data, code = run_reporting_errors(
        'rep-mm quantize',
        lambda: quantize(args.config, args.work_dir, checkpoint=args.checkpoint,
                         random_init=args.random_init, onnx=args.onnx, calib=args.calib,
                         per_tensor=args.per_tensor, deploy_config=args.deploy_config,
                         op_types=op_types, cfg_options=args.cfg_options,
                         threads=args.threads, runs=args.runs, seed=args.seed,
                         overwrite=args.overwrite, unsafe_load=args.unsafe_load,
                         int8_head=args.int8_head, quiet=args.quiet),
        bad_input=(QuantizationError, DeployError, CheckpointError, FileExistsError),
        failed=(QuantizationFailed, ExportFailed))
    if code is not None:
        return code
    for line in summary_lines(data):
        print(line)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
