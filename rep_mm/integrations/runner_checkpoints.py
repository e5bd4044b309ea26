"""Process-wide allow-list of the globals an mmengine Runner checkpoint needs.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch >= 2.6 defaults it to True
and refuses every Runner checkpoint (its ``message_hub`` pickles ``HistoryBuffer`` objects and
numpy arrays, dtypes and scalars). Rather than switching the protection off
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, ``weights_only=False``), importing rep_mm adds exactly
:func:`rep_mm.io.runner_safe_globals` to torch's allow-list: ``HistoryBuffer``, numpy's
``ndarray`` / ``dtype`` / scalar reconstruction and the numeric dtype classes, and a ``getattr``
that resolves only ``HistoryBuffer.{min,max,mean,current}`` (anything else is refused). Every
other global still fails to load, so a hostile pickle stays harmless.

Configs bring rep_mm in through ``custom_imports``, which mmengine's ``Config.fromfile`` imports
before any checkpoint is read, so the toolboxes' own scripts and APIs need nothing else.
"""
from typing import Any, List

import torch

__all__ = ['allow_runner_checkpoints', 'registered_runner_globals']


def allow_runner_checkpoints() -> List[Any]:
    """Add the Runner-checkpoint globals to torch's ``weights_only`` allow-list (idempotent).

    Returns the entries that were added now (empty when they were already present).
    """
    from ..io import runner_safe_globals
    present = torch.serialization.get_safe_globals()
    added = [item for item in runner_safe_globals() if item not in present]
    if added:
        torch.serialization.add_safe_globals(added)
    return added


def registered_runner_globals() -> List[Any]:
    """The Runner-checkpoint entries currently on torch's allow-list."""
    from ..io import runner_safe_globals
    present = torch.serialization.get_safe_globals()
    return [item for item in runner_safe_globals() if item in present]
