"""``rep-mm export`` / ``tools/deploy.py``: argument parsing, the summary printed, exit codes."""
from __future__ import annotations

from typing import Optional, Sequence

from ..cli.args import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_overwrite, add_random_init,
                        add_unsafe_load, add_work_dir_inputs, parse_or_exit_code,
                        run_reporting_errors)
from .errors import DeployError, ExportFailed
from .pipeline import export
from .report import DEFAULT_TOLERANCE

__all__ = ['EXIT_OK', 'EXIT_FAILED', 'EXIT_BAD_INPUT', 'build_parser', 'main']



def build_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog='rep-mm export',
        description='Convert every re-param block, export ONNX through mmdeploy, run it in '
                    'onnxruntime on a real image and compare with PyTorch. Exit codes: 0 '
                    'pass, 1 error or graph check beyond the limits, 2 bad input.')
    add_work_dir_inputs(
        parser, 'mmpretrain / mmseg / mmdet config using rep_mm',
        'training-form or converted checkpoint (omit with --random-init)',
        'output directory (ONNX, converted.pth, SDK meta, report.json)')
    add_random_init(parser)
    parser.add_argument('--image', help='input image (default: a digit / digit scene made by '
                                        'rep_mm.datasets)')
    parser.add_argument('--deploy-config',
                        help='mmdeploy deploy config (default: configs/deploy/<task>_'
                             'onnxruntime_static.py)')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='max relative error ONNX vs PyTorch, max|a-b|/max|a| '
                             f'(default {DEFAULT_TOLERANCE:g})')
    add_overwrite(parser, 'replace outputs of an earlier export in the work dir')
    add_unsafe_load(parser, 'unpickle the checkpoint fully (weights_only=False): trusted only',
                    legacy_alias=False)
    parser.add_argument('--seed', type=int, default=0, help='seed of --random-init and image')
    parser.add_argument('--no-sdk', action='store_true', help='skip mmdeploy SDK meta')
    parser.add_argument('--no-sdk-run', action='store_true',
                        help='write the SDK meta but do not run it in mmdeploy_runtime')
    parser.add_argument('--quiet', action='store_true', help='no progress output')
    return parser


def _sdk_summary(check: dict) -> str:
    """One line on the SDK run (mmdeploy_runtime) against PyTorch."""
    if not check.get('ran'):
        return check.get('note', 'not run')
    if check.get('passed') is None:  # ran, but its output cannot be compared (see note)
        return f'not comparable: {check.get("note", "")}'
    verdict = 'ok' if check.get('passed') else 'FAIL'
    if 'sdk_label' in check:
        return (f'class {check["sdk_label"]} (PyTorch {check["torch_label"]}), score diff '
                f'{check["score_diff"]:.3g} ({verdict})')
    if 'pixel_agreement' in check:
        return (f'{check["pixel_agreement"]:.4%} of {check["pixels"]} pixels agree '
                f'({verdict})')
    if 'matched' in check:
        return (f'{check["matched"]} of {check["reference_boxes"]} PyTorch boxes matched '
                f'({check["sdk_boxes"]} SDK; min IoU {check["min_iou"]}) ({verdict})')
    return f'{check.get("note", "")} ({verdict})'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``rep-mm export`` / ``tools/deploy.py``: returns the exit code."""
    from ..io import CheckpointError
    args, code = parse_or_exit_code(build_parser(), argv)  # --help, usage errors
    if args is None:
        return code
    report, code = run_reporting_errors(
        'rep-mm export',
        lambda: export(args.config, args.work_dir, checkpoint=args.checkpoint,
                       random_init=args.random_init, image=args.image,
                       deploy_config=args.deploy_config, tolerance=args.tolerance,
                       overwrite=args.overwrite, unsafe_load=args.unsafe_load, seed=args.seed,
                       sdk=not args.no_sdk, quiet=args.quiet, sdk_run=not args.no_sdk_run),
        bad_input=(DeployError, CheckpointError, FileExistsError), failed=ExportFailed)
    if code is not None:
        return code
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
                 f'their fused operator exactly once' if graph['scopes_named'] else graph['note'])
    standalone = len(graph.get('standalone_batch_norms', []))
    print(f'  graph: {graph["nodes"]} nodes, {graph["conv_nodes"]} Conv, '
          f'{standalone} stand-alone BatchNormalization; {per_block}')
    for reason in graph['failures']:
        print(f'  graph FAIL: {reason}')
    for size in (data.get('dynamic') or {}).get('sizes', []):
        if size.get('comparable'):
            print(f'  dynamic {size["input_shape"]}: max rel {size["max_rel"]:.3g} '
                  f'({"ok" if size["passed"] else "FAIL"})')
        else:
            print(f'  dynamic {size["input_shape"]}: {size.get("note")} (FAIL)')
    print(f'  SDK meta: {"written" if data["sdk"]["written"] else data["sdk"]["note"]}')
    print(f'  SDK run: {_sdk_summary(data.get("sdk_check") or {})}')
    print(f'  work dir: {report.work_dir} (report.json)')
    if report.passed:
        print(f'PASS ({data["checked"]} within {report.tolerance:g})')
        return EXIT_OK
    for failure in data['failures']:
        print(f'FAIL: {failure}')
    return EXIT_FAILED
