"""Check that conversion keeps a model's outputs (same as ``rep-mm verify``).

Usage::

    python tools/verify.py CONFIG CKPT [--deploy-checkpoint D] [--shape 1x3x224x224]
    python tools/verify.py --arch RepVGG-A0 IN [--deploy-checkpoint D]
"""
import os
import sys

try:
    from rep_mm.cli.dispatch import main
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rep_mm.cli.dispatch import main

if __name__ == '__main__':
    sys.exit(main(['verify', *sys.argv[1:]]))
