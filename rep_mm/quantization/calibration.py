"""Calibration data for onnxruntime's static quantization: images of the config's OWN train
set, through its train pipeline (augmentations included, fitted to the static input size) and
the model's ``data_preprocessor``, exactly the input the fp32 ONNX takes."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from .data import build_dataset, to_onnx_input
from .errors import QuantizationError

__all__ = ['TrainSetReader']


class TrainSetReader(CalibrationDataReader):
    """Yields ``{input_name: float32 (1, 3, H, W)}`` for ``count`` train images.

    The images are a seeded random subset (without replacement) of
    ``cfg.train_dataloader.dataset``; all of them when the set holds fewer than ``count``
    (``used`` says how many). The first image is read and checked in ``__init__`` so that a
    missing set or a wrong shape is reported before any quantization work.

    Args:
        cfg: the mm config (its ``train_dataloader``).
        preprocessor: the model's data preprocessor (:func:`.data.build_preprocessor`).
        input_name: the ONNX input's name.
        input_shape: the ONNX input's shape (static ints; e.g. ``[1, 3, 32, 32]``).
        codebase: ``mmpretrain`` / ``mmseg``.
        count: number of calibration images (> 0).
        seed: seed of the subset.
    """

    def __init__(self, cfg: Any, preprocessor: Any, input_name: str,
                 input_shape: Sequence[Any], codebase: str, count: int, seed: int = 0) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            raise QuantizationError(f'--calib must be a positive number of images, got '
                                    f'{count!r}')
        static_hw = _static_hw(input_shape)
        self.dataset = build_dataset(cfg, 'train_dataloader', static_hw, codebase,
                                     'calibration')
        self.preprocessor, self.input_name = preprocessor, input_name
        self.input_shape = list(input_shape)
        rng = np.random.default_rng(seed)
        size = len(self.dataset)
        self.indices: List[int] = [int(i) for i in rng.permutation(size)[:count]]
        self.requested, self.used = count, len(self.indices)
        self._first: Optional[np.ndarray] = self._read(0)
        self._position = 0

    def _read(self, position: int) -> np.ndarray:
        index = self.indices[position]
        array, _ = to_onnx_input(self.dataset[index], self.preprocessor, self.input_shape,
                                 f'calibration image {index} of train_dataloader.dataset')
        return array

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        """The next ``{input_name: array}``, None after the last image."""
        if self._position >= self.used:
            return None
        if self._position == 0 and self._first is not None:
            array, self._first = self._first, None
        else:
            array = self._read(self._position)
        self._position += 1
        return {self.input_name: array}

    def rewind(self) -> None:
        """Start again from the first image (the same images, new augmentation draws)."""
        self._position = 0

    def pipeline(self) -> List[str]:
        """The fitted train pipeline used (for the report)."""
        return _pipeline_cfg(self.dataset)


def _pipeline_cfg(dataset: Any) -> List[str]:
    """The transforms of ``dataset``'s pipeline by class name (with their repr's arguments)."""
    return [repr(t) for t in dataset.pipeline.transforms]


def _static_hw(shape: Sequence[Any]) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of an NCHW input shape when both are static ints, else None."""
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        return int(shape[2]), int(shape[3])
    return None
