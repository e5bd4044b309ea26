"""Weights of the model to export: a checkpoint in training or converted form, or random."""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

from torch import nn

from .errors import DeployError

__all__ = ['load_into', 'init_weights']


def load_into(model: nn.Module, checkpoint: str, allow_unsafe: bool) -> Tuple[str, List[str]]:
    """Load a training-form checkpoint, or a converted one (then the model is folded first).

    Returns the form (``'training'`` / ``'deploy'``) and notes.
    """
    from ..io.checkpoint import (CheckpointError, extract_state_dict, load_checkpoint_file,
                              load_weights)
    from ..reparam import reparameterize
    state = extract_state_dict(load_checkpoint_file(checkpoint, allow_unsafe))
    try:
        report = load_weights(model, state, kind='rep_mm', strict=True, target='model')
        return 'training', [report.summary()]
    except CheckpointError as training_error:
        folded = copy.deepcopy(model)
        reparameterize(folded)
        try:
            report = load_weights(folded, state, kind='rep_mm', strict=True, target='model')
        except CheckpointError:
            raise DeployError(f'checkpoint {checkpoint!r} fits neither the training form nor '
                              f'the converted form of the model:\n{training_error}')
        reparameterize(model)
        model.load_state_dict(folded.state_dict())
        return 'deploy', [report.summary()]


def init_weights(model: nn.Module, checkpoint: Optional[str], random_init: bool,
                 allow_unsafe: bool, seed: int) -> Tuple[str, List[str]]:
    """Random weights with randomised BN statistics (``random_init``), else
    :func:`load_into`. Returns the form (``'training'`` / ``'deploy'``) and notes."""
    if random_init:
        from ..verify.bn_statistics import randomize_bn_statistics
        randomize_bn_statistics(model, seed)
        return 'training', [f'random weights (seed {seed}), BN statistics randomised']
    return load_into(model, checkpoint, allow_unsafe)
