"""Reading and writing: safe checkpoint loading, key maps, form-aware weight loading, configs,
atomic output files.

* :mod:`.checkpoint`: ``weights_only`` loading with the Runner allow-list, zip CRC checks, the
  official / mmpretrain / rep_mm key maps, :func:`load_weights` and atomic checkpoint saving.
* :mod:`.files`: output-path checks, atomic writes, config files with errors that name the line.
"""
