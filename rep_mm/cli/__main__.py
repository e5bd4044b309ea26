"""``python -m rep_mm.cli``: the ``rep-mm`` command."""
import sys

from .main import main

sys.exit(main())
