"""The demo (``python -m rep_mm.demo`` / ``rep-mm demo``, :mod:`rep_mm.demo.run`): digits
classification, digit-scene segmentation and RepOptimizer, each trained, converted and compared
in both forms.

Imported on demand only (it needs the toolboxes and writes a work dir).
"""
