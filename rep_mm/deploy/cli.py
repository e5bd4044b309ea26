"""``rep-mm export`` / ``tools/deploy.py``: argument parsing, the summary printed, exit codes."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .errors import DeployError, ExportFailed
from .pipeline import export
from .report import DEFAULT_TOLERANCE

__all__ = ['EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'build_parser', 'main']

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog='rep-mm export',
        description='Convert every re-param block, export ONNX through mmdeploy, run it in '
                    'onnxruntime on a real image and compare with PyTorch. Exit codes: 0 '
                    'pass, 1 error or graph check beyond the limits, 2 bad input.')
    parser.add_argument('config', help='mmpretrain / mmseg / mmdet config using rep_mm')
    parser.add_argument('checkpoint', nargs='?',
                        help='training-form or converted checkpoint (omit with --random-init)')
    parser.add_argument('--work-dir', required=True,
                        help='output directory (ONNX, converted.pth, SDK meta, report.json)')
    parser.add_argument('--random-init', action='store_true',
                        help='no checkpoint: random weights, randomised BN statistics (smoke)')
    parser.add_argument('--image', help='input image (default: a digit / digit scene made by '
                                        'rep_mm.datasets)')
    parser.add_argument('--deploy-config',
                        help='mmdeploy deploy config (default: configs/deploy/<task>_'
                             'onnxruntime_static.py)')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='max relative error ONNX vs PyTorch, max|a-b|/max|a| '
                             f'(default {DEFAULT_TOLERANCE:g})')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace outputs of an earlier export in the work dir')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the checkpoint fully (weights_only=False): trusted only')
    parser.add_argument('--seed', type=int, default=0, help='seed of --random-init and image')
    parser.add_argument('--no-sdk', action='store_true', help='skip mmdeploy SDK meta')
    parser.add_argument('--quiet', action='store_true', help='no progress output')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``rep-mm export`` / ``tools/deploy.py``: returns the exit code."""
    from ..checkpoint import CheckpointError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, usage errors
        return int(exit_.code or 0)
    try:
        report = export(args.config, args.work_dir, checkpoint=args.checkpoint,
                        random_init=args.random_init, image=args.image,
                        deploy_config=args.deploy_config, tolerance=args.tolerance,
                        overwrite=args.overwrite, unsafe_load=args.unsafe_load, seed=args.seed,
                        sdk=not args.no_sdk, quiet=args.quiet)
    except (DeployError, CheckpointError, FileExistsError) as error:
        print(f'rep-mm export: error: {error}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportFailed as error:
        print(f'rep-mm export: FAIL: {error}', file=sys.stderr)
        return EXIT_FAILED
    data = report.data
    graph = data['graph']
    print(f'{report.task}: {data["blocks"]["converted"]} block(s) converted, '
          f'{data["blocks"]["already_deployed"]} already in deploy form; '
          f'{data["exporter"]} exporter, opset {data["opset"]}; input {data["input_shape"]}')
    for name, result in data['comparisons'].items():
        if result.get('comparable'):
            print(f'  {name}: max abs {result["max_abs"]:.3g}, max rel {result["max_rel"]:.3g}')
        else:
            print(f'  {name}: not comparable ({result["note"]})')
    per_block = (f'{graph["blocks_with_one_conv"]}/{graph["fused_blocks"]} fused blocks have '
                 f'exactly one Conv' if graph['scopes_named'] else graph['note'])
    print(f'  graph: {graph["nodes"]} nodes, {graph["batch_norm_nodes"]} BatchNormalization, '
          f'{graph["conv_nodes"]} Conv; {per_block}')
    print(f'  SDK meta: {"written" if data["sdk"]["written"] else data["sdk"]["note"]}')
    print(f'  work dir: {report.work_dir} (report.json)')
    if report.passed:
        print(f'PASS ({data["checked"]} within {report.tolerance:g})')
        return EXIT_OK
    for failure in data['failures']:
        print(f'FAIL: {failure}')
    return EXIT_FAILED
