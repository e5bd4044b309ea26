"""A test-only hook that records, per process, what a (distributed) training run did.

Imported by the configs that ``test_dist_train.py`` writes (``custom_imports``); it registers
``rep_mm.DistProbeHook``. Each rank writes ``probe_rank<R>.json`` into the work dir (the probe's
own file, not a checkpoint) with: world size, model wrapper type, every call of mmengine's
``save_checkpoint`` made by this process, and what ``ReparameterizeHook`` validated.
"""
import json
import os

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from rep_mm.hooks import ReparameterizeHook
from rep_mm.registry import HOOKS
from rep_mm.reparam import ReparamBlock


def _forms(model):
    blocks = [m for m in model.modules() if isinstance(m, ReparamBlock)]
    return dict(blocks=len(blocks), deployed=sum(bool(b.deploy) for b in blocks))


@HOOKS.register_module(force=True)
class DistProbeHook(Hook):
    """Record checkpoint writes and the deploy hook's validation model of this process."""

    priority = 'LOWEST'  # before_val_epoch after ReparameterizeHook (LOW)

    def before_run(self, runner) -> None:
        import mmengine.runner.runner as runner_module
        self.record = dict(rank=get_rank(), world_size=get_world_size(), saved=[], val=[])
        original = runner_module.save_checkpoint

        def recording_save(checkpoint, filename, *args, **kwargs):
            self.record['saved'].append(os.path.basename(str(filename)))
            return original(checkpoint, filename, *args, **kwargs)

        runner_module.save_checkpoint = recording_save
        self._restore = (runner_module, original)
        self.record['wrapper'] = type(runner.model).__name__
        self.record['device_ids'] = getattr(runner.model, 'device_ids', 'n/a')

    def before_val_epoch(self, runner) -> None:
        hook = next(h for h in runner.hooks if isinstance(h, ReparameterizeHook))
        inner = runner.model.module if is_model_wrapper(runner.model) else runner.model
        val_model = hook.val_model
        bound = getattr(runner.model.val_step, '__self__', None)
        self.record['val'].append(dict(
            training_model=_forms(inner),
            val_model=None if val_model is None else _forms(val_model),
            val_model_type=type(val_model).__name__,
            val_step_of_converted_copy=bound is val_model and val_model is not None,
            converted=len(hook.last_report.converted) if hook.last_report else 0))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.record['val'][-1]['metrics'] = {k: float(v) for k, v in (metrics or {}).items()}
        self.record['val'][-1]['check'] = getattr(
            next(h for h in runner.hooks if isinstance(h, ReparameterizeHook)), 'last_check', None)

    def after_run(self, runner) -> None:
        module, original = self._restore
        module.save_checkpoint = original  # in-process runs leave mmengine as they found it
        path = os.path.join(runner.work_dir, f'probe_rank{self.record["rank"]}.json')
        with open(path, 'w') as stream:
            json.dump(self.record, stream, indent=1)
