"""rep_mm's version (read by setup.py, recorded in the checkpoints and reports rep_mm writes)."""
__version__ = '0.1.0'
