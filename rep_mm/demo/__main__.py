"""``python -m rep_mm.demo``: the whole demo (see :mod:`rep_mm.demo.classification`)."""
import sys

from .classification import main

sys.exit(main())
