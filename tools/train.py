"""Train a model from an OpenMMLab config (mmpretrain, mmseg, mmdet) with mmengine's Runner.

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--cfg-options k=v ...] [--resume [CKPT]]
                          [--launcher none|pytorch]

``--cfg-options data_root=DIR`` also moves every dataloader whose ``data_root`` was the
config's (:func:`rep_mm.integrations.follow_data_root`; configs with
``runner_type='rep_mm.Runner'`` get the same from the toolboxes' own scripts). Multi-process training: ``bash tools/dist_train.sh CONFIG NPROC [args]``. Without a GPU the
process group uses gloo, DDP is built with ``device_ids=None`` and mmengine's
``torch.cuda.set_device`` is avoided (the process group is initialised here, before the Runner).
Checkpoints read while resuming go through rep_mm's allow-list of the globals a Runner
checkpoint needs (``weights_only=True`` stays on).
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model with mmengine\'s Runner')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: '
                        'cfg.work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto', default=None,
                        help='resume from CKPT, or from the latest checkpoint of the work dir '
                        'when no path is given')
    return parse_runner_args(parser, argv, 'override config entries, e.g. '
                             'data_root=data/digits train_cfg.max_epochs=2')


def parse_runner_args(parser: argparse.ArgumentParser, argv,
                      cfg_options_help: str) -> argparse.Namespace:
    """Add what every Runner tool takes (``--cfg-options``, ``--launcher`` and torchrun's
    ``--local_rank``), parse ``argv`` and export ``LOCAL_RANK`` if the launcher did not."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help=cfg_options_help)
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='job launcher (pytorch = torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


PROG = 'tools/train.py'


def bad_input(message: str, prog: str = PROG) -> None:
    """Report bad input as ``PROG: error: MESSAGE`` and exit with code 2 (before any work),
    as every rep_mm command line does (:func:`rep_mm.cli.args.exit_bad_input`)."""
    from rep_mm.cli.args import exit_bad_input
    exit_bad_input(prog, message)


def load_config(args, prog: str = PROG) -> Config:
    """The config with command-line overrides, work dir and launcher applied (bad input is
    reported as ``PROG: error: ...``, exit code 2)."""
    from rep_mm.io import ConfigError, load_config_file
    try:
        cfg = load_config_file(args.config)
    except ConfigError as error:
        bad_input(str(error), prog)
    if args.cfg_options:
        old_root = cfg.get('data_root')
        cfg.merge_from_dict(args.cfg_options)
        if 'data_root' in args.cfg_options and old_root is not None:
            from rep_mm.integrations import follow_data_root
            follow_data_root(cfg, original=old_root)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if getattr(args, 'resume', None) == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif getattr(args, 'resume', None):
        from rep_mm.io import CheckpointError, verify_zip_checkpoint
        if not osp.isfile(args.resume):
            bad_input(f'--resume checkpoint {args.resume!r} is not a file', prog)
        try:  # the CRCs before the Runner reads it (torch.load does not check them)
            verify_zip_checkpoint(args.resume)
        except CheckpointError as error:
            bad_input(f'--resume: {error}', prog)
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


SYNC_BN_TYPES = ('SyncBN', 'TorchSyncBN', 'MMSyncBN', 'SyncBatchNorm')


def replace_sync_bn(cfg: Config) -> list:
    """Turn SyncBN norm configs (and ``cfg.sync_bn``) into BN: SyncBN cannot run on the CPU.

    ``torch.nn.SyncBatchNorm`` raises "expected input tensor to be on GPU" on its first
    training forward in a CPU process group. As mmengine does for single-process runs, fall
    back to BN, whose batch statistics are then per process. Returns what was changed.
    """
    changed = []

    def visit(node, path):
        if isinstance(node, dict):
            if str(node.get('type', '')).split('.')[-1] in SYNC_BN_TYPES:
                changed.append(f'{path}.type={node["type"]!r}')
                node['type'] = 'BN'
            for key, value in node.items():
                visit(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f'{path}[{i}]')

    visit(cfg.get('model'), 'model')
    if cfg.get('sync_bn'):
        changed.append(f'sync_bn={cfg.sync_bn!r}')
        cfg.sync_bn = None
    return changed


def prepare_cpu_distributed(cfg: Config, prog: str = PROG) -> None:
    """Make a ``launcher='pytorch'`` run work without CUDA (gloo, DDP without devices).

    Initialises the gloo process group from torchrun's environment before the Runner exists,
    so that mmengine's ``init_dist`` (which calls ``torch.cuda.set_device``) is skipped.
    SyncBN layers are replaced by BN (:func:`replace_sync_bn`), with a warning.
    """
    import torch.distributed as dist
    changed = replace_sync_bn(cfg)
    if changed and os.environ.get('RANK', '0') == '0':
        print(f'warning: SyncBN does not run on the CPU; using BN with per-process batch '
              f'statistics instead ({", ".join(changed[:4])}'
              f'{" ..." if len(changed) > 4 else ""})', file=sys.stderr)
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if not dist.is_initialized():
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if k not in os.environ]
        if missing:
            bad_input(f'--launcher pytorch needs the torchrun environment; {missing} not set '
                      f'(start with tools/dist_train.sh or torchrun)', prog)
        extra = {k: v for k, v in dist_cfg.items() if k not in ('backend',)}
        dist.init_process_group(backend='gloo', **extra)


def build_runner(cfg: Config):
    """``Runner.from_cfg``, or the config's own ``runner_type`` through the RUNNERS registry."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def safe_checkpoint_loading():
    """Context in which mmengine's ``torch.load`` accepts Runner checkpoints (and no more)."""
    from rep_mm.io import runner_allow_list
    return runner_allow_list()  # nests with rep_mm's own loads (torch's context does not)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args)
    if args.launcher != 'none' and not torch.cuda.is_available():
        prepare_cpu_distributed(cfg)
    elif not torch.cuda.is_available():
        # one CPU process: mmengine would revert SyncBN to BN anyway; building BN directly
        # keeps the initialisation identical to the same config run with N CPU processes
        replace_sync_bn(cfg)
    runner = build_runner(cfg)
    with safe_checkpoint_loading():
        runner.train()
    shutdown_distributed()  # not on errors: a barrier would wait for a rank that has failed
    return 0


def shutdown_distributed() -> None:
    """Wait for every rank, then tear the process group down before the interpreter exits.

    Left to interpreter shutdown, gloo's threads can be destroyed while still joinable
    ("terminate called without an active exception", SIGABRT in one rank after training).
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == '__main__':
    sys.exit(main())
