"""Extract RepOptimizer scales from a Hyper-Search checkpoint, matched by name to a target model.

Usage::

    python tools/extract_scales.py HS_CKPT OUT --config TARGET_CONFIG [--overwrite]

Same as ``rep-mm extract-scales`` (see :mod:`rep_mm.cli.extract_scales`).
"""
import os
import sys

try:
    from rep_mm.cli.dispatch import main
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rep_mm.cli.dispatch import main

if __name__ == '__main__':
    sys.exit(main(['extract-scales', *sys.argv[1:]]))
