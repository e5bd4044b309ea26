"""Small real data for the demos, written from scikit-learn's digits (no download).

``prepare_digits`` is imported on first access, so that ``python -m rep_mm.datasets.digits``
runs the module fresh (no runpy warning) while ``from rep_mm.datasets import prepare_digits``
still works.
"""
_LAZY = {'prepare_digits': 'digits', 'DigitsError': 'digits', 'DIGITS_CLASSES': 'digits'}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['DIGITS_CLASSES', 'DigitsError', 'prepare_digits']
_LAZY.update(prepare_digit_scenes='digit_scenes', DigitScenesError='digit_scenes',
             SCENE_CLASSES='digit_scenes')
__all__ += ['prepare_digit_scenes', 'DigitScenesError', 'SCENE_CLASSES']
