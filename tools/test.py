"""Test a checkpoint with mmengine's Runner; by default the model is converted to deploy form first.

Usage::

    python tools/test.py CONFIG CKPT [--work-dir DIR] [--cfg-options k=v ...] [--no-deploy]
                         [--out METRICS.json] [--launcher none|pytorch]

Unless ``--no-deploy`` is given, a ``rep_mm.ReparameterizeHook`` is added to ``custom_hooks``
(if the config has none), so the loaded training-form model is folded into its deploy form
before the first test batch; ``--no-deploy`` removes it and tests the training-time model.

The checkpoint is read with ``weights_only=True`` plus rep_mm's allow-list of exactly the
globals a Runner checkpoint needs, its keys are checked against the model *before* testing
(mmengine's ``load_from`` only warns about mismatches and would test a half-random model), and
then the Runner loads it inside the same narrow allow-list.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from train import (build_runner, load_config, parse_runner_args,  # noqa: E402
                   prepare_cpu_distributed, safe_checkpoint_loading, shutdown_distributed)

import torch  # noqa: E402

HOOK_TYPE = 'rep_mm.ReparameterizeHook'


def parse_args(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description='Test a checkpoint with mmengine\'s Runner')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (training form, or deploy form '
                        'with a deploy=True config)')
    parser.add_argument('--work-dir', help='where logs go (default: cfg.work_dir, else '
                        './work_dirs/<config name>)')
    parser.add_argument('--no-deploy', action='store_true',
                        help='test the training-time model (no ReparameterizeHook)')
    parser.add_argument('--out', help='also write the metrics as JSON to this file')
    return parse_runner_args(parser, argv, 'override config entries, e.g. data_root=data/digits')


def is_reparameterize_hook(hook) -> bool:
    """True for a ReparameterizeHook given as a config dict (any scope prefix) or an object."""
    kind = hook.get('type') if isinstance(hook, dict) else type(hook)
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    return name.split('.')[-1] == 'ReparameterizeHook'


def set_deploy_hook(cfg, deploy: bool) -> None:
    """Ensure (``deploy=True``) or remove (``deploy=False``) the ReparameterizeHook."""
    hooks = [h for h in (cfg.get('custom_hooks') or [])]
    present = [h for h in hooks if is_reparameterize_hook(h)]
    if deploy and not present:
        hooks.append(dict(type=HOOK_TYPE))
    elif not deploy:
        hooks = [h for h in hooks if not is_reparameterize_hook(h)]
    cfg.custom_hooks = hooks


def read_checkpoint(path: str):
    """The state dict of ``path`` (CRC-checked, weights_only); SystemExit(2) if unreadable."""
    from rep_mm.io.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file
    try:
        return extract_state_dict(load_checkpoint_file(path))
    except CheckpointError as error:
        bad_input(str(error))


def bad_input(message: str):
    """Print ``error: message`` and exit with code 2 (bad input), like every rep_mm CLI."""
    print(f'error: {message}', file=sys.stderr)
    raise SystemExit(2)


def check_checkpoint_fits(model: torch.nn.Module, path: str, state=None) -> None:
    """Raise SystemExit naming missing / unexpected / mis-shaped keys of ``path`` for ``model``."""
    from mmengine.model import is_model_wrapper

    if is_model_wrapper(model):
        model = model.module
    if state is None:
        state = read_checkpoint(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    lines = [f'error: checkpoint {path!r} does not fit the model of the config']
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('shape mismatch', shapes)):
        if items:
            more = f' ... (+{len(items) - 8} more)' if len(items) > 8 else ''
            lines.append(f'  {title} ({len(items)}): {", ".join(items[:8])}{more}')
    ckpt_deploy = any('rbr_reparam' in k for k in state)
    model_deploy = any('rbr_reparam' in k for k in expected)
    if ckpt_deploy and not model_deploy:
        lines.append('  the checkpoint is in deploy form (rbr_reparam keys) but the model is in '
                     'training form: add --cfg-options model.backbone.deploy=True')
    elif model_deploy and not ckpt_deploy:
        lines.append('  the model is in deploy form but the checkpoint is in training form: '
                     'drop deploy=True (the ReparameterizeHook converts after loading)')
    bad_input('\n'.join(lines)[len('error: '):])


def main(argv=None) -> int:
    args = parse_args(argv)
    from rep_mm.io.files import check_output_path, load_config_file
    if not osp.isfile(args.checkpoint):
        bad_input(f'checkpoint {args.checkpoint!r} is not a file')
    if args.out:
        for given in (args.config, args.checkpoint):
            if osp.exists(args.out) and osp.samefile(args.out, given):
                bad_input(f'--out {args.out!r} is the input file {given!r}; choose another path')
    try:  # everything the run reads or writes is checked before the Runner is built
        load_config_file(args.config)  # one-line error: file, line, cause
        if args.out:
            for note in check_output_path(args.out, (args.config, args.checkpoint),
                                          overwrite=True, what='the metrics'):
                print(f'note: {note}', file=sys.stderr)
    except (ValueError, OSError) as error:
        bad_input(str(error))
    state = read_checkpoint(args.checkpoint)
    args.resume = None
    cfg = load_config(args)
    cfg.load_from, cfg.resume = args.checkpoint, False
    set_deploy_hook(cfg, deploy=not args.no_deploy)
    if args.launcher != 'none' and not torch.cuda.is_available():
        prepare_cpu_distributed(cfg)
    runner = build_runner(cfg)
    check_checkpoint_fits(runner.model, args.checkpoint, state)
    with safe_checkpoint_loading():
        metrics = runner.test()
    if args.out and runner.rank == 0:
        from rep_mm.demo.common import write_json_atomic
        write_json_atomic({k: float(v) if isinstance(v, (int, float)) else v
                           for k, v in metrics.items()}, args.out)
    shutdown_distributed()  # not on errors: a barrier would wait for a rank that has failed
    return 0


if __name__ == '__main__':
    sys.exit(main())
