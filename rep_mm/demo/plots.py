"""Pictures of what the demo's two forms predict: held-out digits, and segmentation scenes.

Both are drawn with matplotlib's Agg canvas (no display, no pyplot state) at a fixed size
(:data:`DIGITS_FIGURE_PIXELS`, :data:`SCENES_FIGURE_PIXELS`) and written atomically as PNG.
"""
from __future__ import annotations

import io
from typing import List, Sequence, Tuple

import numpy as np

from rep_mm.demo.common import spread_indices

__all__ = ['plot_digit_predictions', 'plot_scene_predictions', 'choose_digits',
           'DIGITS_FIGURE_PIXELS', 'SCENES_FIGURE_PIXELS', 'DIGITS_SHOWN', 'SCENES_SHOWN']

DPI = 100
DIGITS_GRID = (4, 8)  # rows, columns
DIGITS_SHOWN = DIGITS_GRID[0] * DIGITS_GRID[1]
DIGITS_FIGURE_INCHES = (10.0, 6.4)
SCENES_SHOWN = 4
SCENES_FIGURE_INCHES = (8.0, 9.0)
DIGITS_FIGURE_PIXELS = tuple(int(side * DPI) for side in DIGITS_FIGURE_INCHES)
SCENES_FIGURE_PIXELS = tuple(int(side * DPI) for side in SCENES_FIGURE_INCHES)
WRONG, DISAGREE = '#d62728', '#ff7f0e'  # red: a wrong prediction; orange: the forms differ
DIFFERING_PIXEL = (1.0, 1.0, 1.0)


def _new_figure(inches: Tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=inches, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure, path: str) -> str:
    """Write ``figure`` to ``path`` atomically (:func:`rep_mm.io.write_bytes_atomic`)."""
    from rep_mm.io import write_bytes_atomic
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format='png')
    return write_bytes_atomic(path, buffer.getvalue())


def choose_digits(labels: Sequence[int], pred_train: Sequence[int], pred_deploy: Sequence[int],
                  count: int = DIGITS_SHOWN) -> List[int]:
    """Indices to draw: every wrong or disagreeing prediction first, then spread-out others."""
    labels, pred_train, pred_deploy = map(np.asarray, (labels, pred_train, pred_deploy))
    flagged = np.flatnonzero((pred_train != labels) | (pred_deploy != labels)
                             | (pred_train != pred_deploy))[:count].tolist()
    others = [i for i in range(len(labels)) if i not in set(flagged)]
    spread = spread_indices(len(others), count - len(flagged)) if count > len(flagged) else []
    return sorted(flagged + [others[i] for i in spread])


def plot_digit_predictions(images: Sequence[np.ndarray], labels: Sequence[int],
                           pred_train: Sequence[int], pred_deploy: Sequence[int],
                           path: str, caption: str) -> str:
    """A grid of digits titled ``label: training-time / converted`` prediction; a red title
    marks a wrong prediction, an orange frame predictions that differ between the forms."""
    figure = _new_figure(DIGITS_FIGURE_INCHES)
    rows, cols = DIGITS_GRID
    for slot, (image, label, a, b) in enumerate(zip(images, labels, pred_train, pred_deploy)):
        axes = figure.add_subplot(rows, cols, slot + 1)
        axes.imshow(image, cmap='gray', vmin=0, vmax=255)
        axes.set_xticks([])
        axes.set_yticks([])
        wrong = a != label or b != label
        axes.set_title(f'{label}: {a} / {b}', fontsize=10, color=WRONG if wrong else 'black')
        if a != b:
            for spine in axes.spines.values():
                spine.set_edgecolor(DISAGREE)
                spine.set_linewidth(3)
    figure.suptitle(f'{caption}\ntitle = true label: training-time / converted prediction '
                    f'(red: wrong; orange frame: the two forms disagree)', fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.86, hspace=0.45)
    return _save_png(figure, path)


def _colour(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[np.clip(mask, 0, len(palette) - 1)]


def plot_scene_predictions(images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                           masks_train: Sequence[np.ndarray], masks_deploy: Sequence[np.ndarray],
                           palette: Sequence[Sequence[int]], class_names: Sequence[str],
                           path: str, caption: str) -> str:
    """Rows of scenes: input, ground truth, training-time mask, converted mask (pixels whose
    class differs from the training-time mask drawn white), with a legend of the palette."""
    from matplotlib.patches import Patch
    colours = np.asarray(palette, dtype=float) / 255.0
    figure = _new_figure(SCENES_FIGURE_INCHES)
    rows = len(images)
    for row, (image, truth, a, b) in enumerate(zip(images, truths, masks_train, masks_deploy)):
        differ = a != b
        converted = _colour(b, colours)
        converted[differ] = DIFFERING_PIXEL
        panels = [(image, 'input' if row == 0 else ''),
                  (_colour(truth, colours), 'ground truth' if row == 0 else ''),
                  (_colour(a, colours), 'training-time' if row == 0 else ''),
                  (converted, f'converted: {int(differ.sum())} px differ')]
        for col, (picture, title) in enumerate(panels):
            axes = figure.add_subplot(rows, 4, row * 4 + col + 1)
            axes.imshow(picture, cmap='gray' if picture.ndim == 2 else None,
                        vmin=0, vmax=255, interpolation='nearest')
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(title, fontsize=9)
    handles = [Patch(facecolor=c, edgecolor='black', label=n) for c, n in zip(colours,
                                                                               class_names)]
    figure.legend(handles=handles, loc='lower center', ncol=6, fontsize=8, frameon=False)
    figure.suptitle(caption, fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.1, top=0.93, hspace=0.3,
                           wspace=0.05)
    return _save_png(figure, path)
