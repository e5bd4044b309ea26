"""Checking results honestly.

* :mod:`.compare`: the one output comparison (max abs / relative error; any NaN or inf fails).
* :mod:`.bn_statistics`: random BatchNorm statistics, so that a fold is never checked at the
  near-identity BN of a freshly built model.
"""
from .bn_statistics import randomize_bn_statistics
from .compare import Comparison, compare

__all__ = ['Comparison', 'compare', 'randomize_bn_statistics']
