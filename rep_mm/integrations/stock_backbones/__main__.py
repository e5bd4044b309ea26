"""``python -m rep_mm.integrations.stock_backbones CONFIG CHECKPOINT OUT`` (see :mod:`.cli`)."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
