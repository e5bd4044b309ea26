"""Convert a training-form checkpoint to deploy form (same as ``rep-mm convert``).

Usage::

    python tools/convert.py CONFIG CKPT OUT [--shape 1x3x224x224] [--tolerance 1e-5]
    python tools/convert.py --arch RepVGG-A0 IN OUT
"""
import os
import sys

try:
    from rep_mm.cli.dispatch import main
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rep_mm.cli.dispatch import main

if __name__ == '__main__':
    sys.exit(main(['convert', *sys.argv[1:]]))
