"""Command-line entry points. ``rep-mm`` (:func:`main`) dispatches to every sub-command
(:data:`rep_mm.cli.dispatch.COMMANDS`); :mod:`.args` holds the options and exit handling that
every rep_mm command line shares (also those of :mod:`rep_mm.deploy` and
:mod:`rep_mm.quantization`)."""
from typing import List, Optional

__all__ = ['main']


def main(argv: Optional[List[str]] = None) -> int:
    """``rep-mm``: the exit code of the sub-command (imported on call, so that importing
    ``rep_mm.cli.args`` does not load every command)."""
    from .dispatch import main as dispatch_main
    return dispatch_main(argv)
