"""The errors of :mod:`rep_mm.io`: each one is bad input that a command line reports in one line.

* :class:`CheckpointError`: a checkpoint that cannot be read, or whose keys do not fit the model;
* :class:`CheckpointFormError`: a checkpoint in the other form (training / deploy) than the one
  needed, in neither form of the model, or with a wrong ``meta['rep_mm_form']`` tag;
* :class:`ConfigError`: a config that cannot be read or built.
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ['CheckpointError', 'CheckpointFormError', 'ConfigError', 'first_line', 'listing']


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys do not fit the model."""


class CheckpointFormError(CheckpointError):
    """A checkpoint whose form (training / deploy) is not the one the model or the step needs.

    Attributes:
        form: the checkpoint's form (``'training'`` / ``'deploy'``), None when its keys fit
            neither form of the model.
        model_form: the model's form (``'training'``, ``'deploy'`` or ``'plain'``).
    """

    def __init__(self, message: str, form: Optional[str] = None,
                 model_form: Optional[str] = None) -> None:
        super().__init__(message)
        self.form = form
        self.model_form = model_form


class ConfigError(ValueError):
    """A config that cannot be read: missing, a syntax error, an unknown plugin, ..."""


def first_line(text: str) -> str:
    """The first line of ``text`` without surrounding blanks (``'no detail'`` if empty)."""
    return text.strip().splitlines()[0] if text.strip() else 'no detail'


def listing(items: Sequence[str], limit: int) -> str:
    """The first ``limit`` of ``items`` joined by commas, then ``, ... (+N more)`` if cut."""
    shown = ', '.join(items[:limit])
    return shown + (f', ... (+{len(items) - limit} more)' if len(items) > limit else '')
