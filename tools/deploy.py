"""Export a rep_mm model to ONNX through MMDeploy and check it in onnxruntime (``rep-mm export``).

Usage::

    python tools/deploy.py CONFIG [CHECKPOINT] --work-dir DIR [--random-init] [--image IMG]
                           [--deploy-config D] [--tolerance 1e-4] [--overwrite]

See rep_mm/deploy/ and docs/deploy.md.
"""
import os
import sys

try:
    from rep_mm.cli.dispatch import main
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rep_mm.cli.dispatch import main

if __name__ == '__main__':
    sys.exit(main(['export', *sys.argv[1:]]))
