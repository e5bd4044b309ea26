"""RepOptInitHook: RepOptimizer's rule of initialisation, applied where nothing overwrites it.

The mmengine Runner builds the optimizer wrapper (and so the RepOpt handler) before
``init_weights()`` and ``load_or_resume()``; a re-initialisation done there would be overwritten
by ``init_weights`` and, worse, applied on top of loaded weights. This hook re-initialises in
``before_train``, after both, and only when the run starts from scratch: when the Runner loaded
(``load_from``) or resumed a checkpoint, the weights are kept as they are.
"""
from mmengine.dist import broadcast, get_world_size
from mmengine.hooks import Hook

from ...integrations.mm_build import unwrap_model
from ...registry import HOOKS

__all__ = ['RepOptInitHook']


@HOOKS.register_module()
class RepOptInitHook(Hook):
    """Re-initialise the target model from the scales of ``RepOptOptimWrapperConstructor``.

    Needs ``optim_wrapper.constructor='rep_mm.RepOptOptimWrapperConstructor'``. In distributed
    runs the new kernels are broadcast from rank 0 so that every rank starts identical.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        handler = getattr(runner.optim_wrapper, 'repopt_handler', None)
        if handler is None:
            raise RuntimeError('RepOptInitHook needs the optimizer wrapper built by '
                               "constructor='rep_mm.RepOptOptimWrapperConstructor' (it holds the "
                               'scales); this run has none')
        if getattr(runner, '_has_loaded', False):
            runner.logger.info('RepOptInitHook: weights were loaded or resumed from a checkpoint, '
                               'the RepOptimizer re-initialisation is skipped')
            return
        handler.reinitialize()
        if get_world_size() > 1:
            for block in handler.blocks.values():
                broadcast(handler.kernel_param(block).data, src=0)
        model = unwrap_model(runner.model)
        runner.logger.info(f'RepOptInitHook: re-initialised {len(handler.blocks)} target kernels '
                           f'of {type(model).__name__} from the searched scales')
