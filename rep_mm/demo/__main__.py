"""``python -m rep_mm.demo``: the whole demo (:func:`rep_mm.demo.run.main`)."""
import sys

from rep_mm.demo.run import main

sys.exit(main())
