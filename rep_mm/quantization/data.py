"""Data of the config itself: load it, fit its pipelines to the ONNX static input, build its
datasets, turn one pipeline output into the ONNX input.

The ONNX input is what mmdeploy's ``create_input`` gave the exporter: the pipeline's packed
image, collated as a batch of one, through the model's ``data_preprocessor`` (normalisation,
channel order, padding), i.e. a float32 array ``(1, 3, H, W)``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import QuantizationError

__all__ = ['load_config', 'fit_pipeline', 'build_dataset', 'build_preprocessor',
           'to_onnx_input', 'scope_of']


def load_config(config: str, cfg_options: Optional[Dict[str, Any]] = None) -> Any:
    """``Config.fromfile`` + ``--cfg-options``; a changed ``data_root`` moves every dataset
    (:func:`rep_mm.integrations.follow_data_root`)."""
    from mmengine.config import Config

    from ..integrations import follow_data_root
    cfg = Config.fromfile(config)
    original = cfg.get('data_root')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
        follow_data_root(cfg, original)
    return cfg


def scope_of(codebase: str) -> str:
    """Registry scope of a codebase name (``mmpretrain`` / ``mmseg`` / ``mmdet``)."""
    return codebase


def fit_pipeline(pipeline: Sequence[Dict[str, Any]], input_hw: Optional[Tuple[int, int]],
                 codebase: str) -> List[Dict[str, Any]]:
    """A copy of ``pipeline`` whose images come out at the ONNX static input ``(H, W)``.

    mmdeploy's rule for static export (``process_model_config``): every ``Resize`` gets
    ``scale=(W, H), keep_ratio=False``; rep_mm.deploy's rule for segmentors without one
    (``ensure_resize``): insert that ``Resize`` after the loading step, before
    ``LoadAnnotations``, so that the label maps keep their original size. Other pipelines are
    left as they are (a shape that still differs is reported by :func:`to_onnx_input`).
    """
    pipeline = [dict(copy.deepcopy(step)) for step in pipeline]
    if input_hw is None:
        return pipeline
    scale = (int(input_hw[1]), int(input_hw[0]))
    found = False
    for step in pipeline:
        if step.get('type') == 'Resize':
            step.update(scale=scale, keep_ratio=False)
            step.pop('scale_factor', None)
            found = True
    if not found and codebase == 'mmseg':
        pipeline.insert(1, dict(type='Resize', scale=scale, keep_ratio=False))
    return pipeline


def build_dataset(cfg: Any, loader_key: str, input_hw: Optional[Tuple[int, int]],
                  codebase: str, what: str) -> Any:
    """Build ``cfg[loader_key].dataset`` with its pipeline fitted (:func:`fit_pipeline`).

    Raises :class:`QuantizationError` when the config has no such loader, the data cannot be
    read (missing data root / annotation files) or the dataset is empty.
    """
    from mmengine.registry import DATASETS, init_default_scope
    loader = cfg.get(loader_key)
    if not loader or 'dataset' not in loader:
        raise QuantizationError(f'the config has no {loader_key}.dataset: the {what} set is '
                                f'read from it')
    init_default_scope(scope_of(codebase))
    dataset_cfg = copy.deepcopy(loader['dataset'])
    target = dataset_cfg
    while 'pipeline' not in target and 'dataset' in target:  # wrappers (RepeatDataset ...)
        target = target['dataset']
    if 'pipeline' in target:
        target['pipeline'] = fit_pipeline(target['pipeline'], input_hw, codebase)
    try:
        dataset = DATASETS.build(dataset_cfg)
    except Exception as error:  # noqa: BLE001 - the data is missing or unreadable
        first = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise QuantizationError(
            f'the {what} set ({loader_key}.dataset) could not be loaded: '
            f'{type(error).__name__}: {first}; prepare the data or point at it with '
            f'--cfg-options data_root=DIR') from None
    if len(dataset) == 0:
        raise QuantizationError(f'the {what} set ({loader_key}.dataset) is empty; give a data '
                                f'root with images (--cfg-options data_root=DIR)')
    return dataset


def build_preprocessor(cfg: Any, codebase: str) -> Any:
    """The model's ``data_preprocessor`` as mmdeploy builds it (``cfg.model`` with the config's
    top-level ``data_preprocessor`` as default), in eval mode."""
    from ..integrations import build_model
    model_cfg = cfg.model
    pre_cfg = copy.deepcopy(model_cfg.get('data_preprocessor') or
                            cfg.get('data_preprocessor') or {})
    if 'type' not in pre_cfg:  # the defaults the toolboxes' models apply
        pre_cfg['type'] = {'mmpretrain': 'mmpretrain.ClsDataPreprocessor',
                           'mmseg': 'mmseg.SegDataPreProcessor',
                           'mmdet': 'mmdet.DetDataPreprocessor'}[codebase]
    return build_model(cfg, pre_cfg, default_scope=scope_of(codebase)).eval()


def to_onnx_input(item: Dict[str, Any], preprocessor: Any,
                  expected: Sequence[Any], source: str) -> Tuple[np.ndarray, List[Any]]:
    """One pipeline output -> (ONNX input ``(1, 3, H, W)`` float32, its data samples).

    ``expected`` is the ONNX input shape (ints for static dims, str/None for dynamic ones).
    Raises :class:`QuantizationError` naming ``source`` when the shape does not match.
    """
    import torch
    from mmengine.dataset import pseudo_collate
    with torch.no_grad():
        out = preprocessor(pseudo_collate([item]), False)
    inputs = out['inputs']
    array = inputs.detach().cpu().numpy().astype(np.float32, copy=False)
    ok = array.ndim == len(expected) and all(
        not isinstance(e, int) or e == s for e, s in zip(expected, array.shape))
    if not ok:
        raise QuantizationError(
            f'{source} gives an ONNX input of shape {list(array.shape)}, but the graph expects '
            f'{list(expected)}; the pipeline must produce images of the exported input size '
            f'(deploy config input_shape)')
    return array, out['data_samples']
