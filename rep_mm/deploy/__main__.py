"""``python -m rep_mm.deploy ...``: same as ``rep-mm export ...``."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
