"""``python -m rep_mm.cli``: the ``rep-mm`` command."""
import sys

from .dispatch import main

sys.exit(main())
