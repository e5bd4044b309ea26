"""Test a checkpoint with mmengine's Runner; by default the model is converted to deploy form first.

Usage::

    python tools/test.py CONFIG CKPT [--work-dir DIR] [--cfg-options k=v ...] [--no-deploy]
                         [--out METRICS.json [--overwrite]] [--launcher none|pytorch]

Unless ``--no-deploy`` is given, a ``rep_mm.ReparameterizeHook`` is added to ``custom_hooks``
(if the config has none), so the loaded training-form model is folded into its deploy form
before the first test batch; ``--no-deploy`` removes it and tests the training-time model.

The checkpoint is read with ``weights_only=True`` plus rep_mm's allow-list of exactly the
globals a Runner checkpoint needs, its keys are checked against the model *before* testing
(mmengine's ``load_from`` only warns about mismatches and would test a half-random model):
its form (training / deploy, and its ``meta['rep_mm_form']`` tag) is found by
:mod:`rep_mm.io.forms`, and a checkpoint of the other form than the config's model is refused
with what to change. Then the Runner loads it inside the same narrow allow-list.

Bad input is reported as ``tools/test.py: error: ...`` with exit code 2, before the Runner.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from train import (build_runner, load_config, parse_runner_args,  # noqa: E402
                   prepare_cpu_distributed, safe_checkpoint_loading, shutdown_distributed)

import torch  # noqa: E402

PROG = 'tools/test.py'
HOOK_TYPE = 'rep_mm.ReparameterizeHook'
MAX_LISTED = 8


def parse_args(argv=None):
    """The command line of tools/test.py (and the Runner options of tools/train.py)."""
    import argparse

    from rep_mm.cli.args import add_overwrite
    parser = argparse.ArgumentParser(prog=PROG,
                                     description='Test a checkpoint with mmengine\'s Runner')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (training form, or deploy form '
                        'with a deploy=True config)')
    parser.add_argument('--work-dir', help='where logs go (default: cfg.work_dir, else '
                        './work_dirs/<config name>)')
    parser.add_argument('--no-deploy', action='store_true',
                        help='test the training-time model (no ReparameterizeHook)')
    parser.add_argument('--out', help='also write the metrics as JSON to this file')
    add_overwrite(parser, 'replace an existing --out file')
    return parse_runner_args(parser, argv, 'override config entries, e.g. data_root=data/digits')


def bad_input(message: str):
    """``tools/test.py: error: MESSAGE`` and exit code 2, like every rep_mm command line."""
    from rep_mm.cli.args import exit_bad_input
    exit_bad_input(PROG, message)


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
    """The loaded checkpoint ``path`` (CRC-checked, weights_only); exit 2 if unreadable."""
    from rep_mm.io import CheckpointError, extract_state_dict, load_checkpoint_file
    try:
        loaded = load_checkpoint_file(path)
        extract_state_dict(loaded)  # a state dict must be inside
        return loaded
    except CheckpointError as error:
        bad_input(str(error))


def _key_problems(state, expected) -> list:
    """Lines for the missing / unexpected / mis-shaped keys of ``state`` for ``expected``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
              for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    lines = []
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('shape mismatch', shapes)):
        if items:
            more = f' ... (+{len(items) - MAX_LISTED} more)' if len(items) > MAX_LISTED else ''
            lines.append(f'  {title} ({len(items)}): {", ".join(items[:MAX_LISTED])}{more}')
    return lines


def form_problem(state, model, tag):
    """What is wrong with the form of the checkpoint keys ``state`` (tag ``tag``) for
    ``model``, as a line to print, or None (same form; or no form fits: the keys say it)."""
    from rep_mm.io import CheckpointFormError
    from rep_mm.io.forms import ModelKeys, resolve_form
    forms = ModelKeys(model)
    try:
        form = resolve_form(list(state), forms, tag)
    except CheckpointFormError as error:
        return None if error.form is None else f'  {error}'  # a wrong tag says so
    if forms.form == 'plain' or form == forms.form:
        return None
    telling = forms.markers(k for k in state if k not in set(forms.keys))
    if form == 'deploy':
        return (f'  the checkpoint is in deploy form ({telling} keys) but the model is in '
                f'training form: add --cfg-options model.backbone.deploy=True')
    return (f'  the model is in deploy form but the checkpoint is in training form ({telling} '
            f'keys): drop deploy=True (the ReparameterizeHook converts after loading)')


def check_checkpoint_fits(model: torch.nn.Module, path: str, loaded=None) -> None:
    """Exit 2 naming missing / unexpected / mis-shaped keys of ``path`` for ``model``, and a
    checkpoint of the other form (or with a wrong form tag)."""
    from rep_mm.integrations import unwrap_model
    from rep_mm.io import extract_state_dict, form_tag
    model = unwrap_model(model)
    loaded = read_checkpoint(path) if loaded is None else loaded
    state = extract_state_dict(loaded)
    lines = _key_problems(state, model.state_dict())
    tag = form_tag(loaded)
    problem = form_problem(state, model, tag) if lines or tag else None
    if problem:
        lines.append(problem)
    if lines:
        bad_input('\n'.join([f'checkpoint {path!r} does not fit the model of the config']
                            + lines))


def check_inputs(args) -> None:
    """Everything the run reads or writes, before the Runner is built (exit 2 on a problem)."""
    from rep_mm.cli.args import UsageError, check_output
    from rep_mm.io import ConfigError, load_config_file
    if not osp.isfile(args.checkpoint):
        bad_input(f'checkpoint {args.checkpoint!r} is not a file')
    if args.out:
        for given in (args.config, args.checkpoint):
            if osp.exists(args.out) and osp.samefile(args.out, given):
                bad_input(f'--out {args.out!r} is the input file {given!r}; choose another path')
    try:
        load_config_file(args.config)  # one-line error: file, line, cause
        if args.out:
            check_output(args.out, (args.config, args.checkpoint), args.overwrite,
                         'the metrics')
    except (ConfigError, UsageError) as error:
        bad_input(str(error))


def main(argv=None) -> int:
    """Check the inputs, build the Runner, check the checkpoint's keys and form, test."""
    args = parse_args(argv)
    check_inputs(args)
    loaded = read_checkpoint(args.checkpoint)
    args.resume = None
    cfg = load_config(args, PROG)
    cfg.load_from, cfg.resume = args.checkpoint, False
    set_deploy_hook(cfg, deploy=not args.no_deploy)
    if args.launcher != 'none' and not torch.cuda.is_available():
        prepare_cpu_distributed(cfg, PROG)
    runner = build_runner(cfg)
    check_checkpoint_fits(runner.model, args.checkpoint, loaded)
    with safe_checkpoint_loading():
        metrics = runner.test()
    if args.out and runner.rank == 0:
        from rep_mm.io import write_json_atomic
        write_json_atomic({k: float(v) if isinstance(v, (int, float)) else v
                           for k, v in metrics.items()}, args.out)
    shutdown_distributed()  # not on errors: a barrier would wait for a rank that has failed
    return 0


if __name__ == '__main__':
    sys.exit(main())
