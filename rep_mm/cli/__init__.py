"""Command-line entry points. ``rep-mm`` (:func:`main`) dispatches to every sub-command."""
from .main import main

__all__ = ['main']
