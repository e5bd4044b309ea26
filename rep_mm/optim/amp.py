"""CPUAmpOptimWrapper: mmengine's AmpOptimWrapper for bfloat16 autocast on the CPU.

mmengine 0.10.7's ``AmpOptimWrapper.__init__`` asserts a GPU / NPU / MLU / MUSA device, although
its ``optim_context`` (``mmengine.runner.amp.autocast``) supports the CPU in bfloat16. This
subclass only replaces the constructor: no device assertion, ``dtype`` bfloat16 (the one CPU
autocast type mmengine accepts) and a disabled ``torch.amp.GradScaler`` (bfloat16 has float32's
exponent range, so no loss scaling: ``scale``/``unscale_``/``update`` pass through and ``step``
calls ``optimizer.step()``). Backward, step, state dicts and the autocast context are
AmpOptimWrapper's. With RepOptimizer::

    optim_wrapper = dict(type='rep_mm.CPUAmpOptimWrapper', dtype='bfloat16',
                         constructor='rep_mm.RepOptOptimWrapperConstructor', scales=...,
                         optimizer=dict(type='rep_mm.RepOptSGD', lr=0.1, momentum=0.9))

Parameters, gradients, grad mults and optimizer state stay float32; only the forward (and so the
backward) run in bfloat16 where autocast allows it.
"""
from typing import Union

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ..registry import OPTIM_WRAPPERS

__all__ = ['CPUAmpOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """AmpOptimWrapper that runs on the CPU in bfloat16 (module docstring).

    Args:
        dtype (str | torch.dtype): ``'bfloat16'`` (default; the only CPU autocast type).
        **kwargs: OptimWrapper arguments (``optimizer``, ``accumulative_counts``, ...).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs) -> None:
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f'CPUAmpOptimWrapper autocasts to bfloat16 only (the CPU type of '
                             f"mmengine's autocast), got dtype={dtype!r}; on a GPU use "
                             f"mmengine's AmpOptimWrapper")
        if 'loss_scale' in kwargs:
            raise ValueError('CPUAmpOptimWrapper takes no loss_scale: bfloat16 needs no loss '
                             'scaling (the GradScaler is disabled)')
        OptimWrapper.__init__(self, **kwargs)  # skips AmpOptimWrapper's device assertion
        self._scale_update_param = None
        self.cast_dtype = torch.bfloat16
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
