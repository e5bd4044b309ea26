"""Weights of the model to export: a checkpoint in training or converted form, or random."""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

__all__ = ['load_checkpoint', 'init_weights']


def load_checkpoint(model: nn.Module, checkpoint: str,
                    allow_unsafe: bool) -> Tuple[str, List[str]]:
    """Load a training-form checkpoint, or a converted one (the model is converted first), by
    :func:`rep_mm.io.load_into`. Returns the form (``'training'`` / ``'deploy'``) and notes.

    Raises:
        rep_mm.io.CheckpointError: unreadable, or fits neither form of the model (the
            differences are listed).
    """
    from ..io import load_into
    result = load_into(model, checkpoint, kind='rep_mm', target='model',
                       allow_unsafe=allow_unsafe)
    return result.form, [result.summary()]


def init_weights(model: nn.Module, checkpoint: Optional[str], random_init: bool,
                 allow_unsafe: bool, seed: int) -> Tuple[str, List[str]]:
    """Random weights with randomised BN statistics (``random_init``), else
    :func:`load_checkpoint`. Returns the form (``'training'`` / ``'deploy'``) and notes."""
    if random_init:
        from ..verify.bn_statistics import randomize_bn_statistics
        randomize_bn_statistics(model, seed)
        return 'training', [f'random weights (seed {seed}), BN statistics randomised']
    return load_checkpoint(model, checkpoint, allow_unsafe)
