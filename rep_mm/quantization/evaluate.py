"""The config's own metric on its val set, for ONNX graphs: every val image through the val
pipeline (fitted to the static input) and the model's ``data_preprocessor``, onnxruntime's
outputs packed back into the toolbox's data samples the way mmdeploy's backend models do, then
``cfg.val_evaluator`` (mmpretrain ``Accuracy``, mmseg ``IoUMetric`` ...) through mmengine's
``Evaluator``."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .data import build_dataset, to_onnx_input

__all__ = ['pack_predictions', 'evaluate_sessions']


def pack_predictions(codebase: str, outputs: Sequence[np.ndarray], samples: List[Any],
                     with_argmax: bool = False) -> List[Any]:
    """ONNX outputs of a batch -> the same data samples with predictions set.

    mmpretrain: ``output`` ``(N, num_classes)`` softmax scores (mmdeploy's classifier
    rewrite) -> ``pred_score``, ``pred_label = argmax``. mmseg: ``(N, C, H, W)`` logits
    (``with_argmax=False``) or ``(N, 1, H, W)`` labels -> ``pred_sem_seg`` at the image's
    original size (nearest resize, as mmdeploy's segmentation ``End2EndModel``).
    """
    if codebase == 'mmpretrain':
        scores = torch.from_numpy(np.asarray(outputs[0]))
        for sample, score in zip(samples, scores):
            sample.set_pred_score(score).set_pred_label(score.argmax(dim=0, keepdim=True))
        return samples
    if codebase == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.models.utils import resize
        batch = torch.from_numpy(np.asarray(outputs[0]))
        for sample, pred in zip(samples, batch):
            if not with_argmax:
                pred = pred.argmax(dim=0, keepdim=True)
            meta = sample.metainfo
            if tuple(meta['ori_shape']) != tuple(meta['img_shape']):
                pred = resize(pred.unsqueeze(0).float(), size=meta['ori_shape'],
                              mode='nearest').squeeze(0).to(pred.dtype)
            sample.set_data(dict(pred_sem_seg=PixelData(data=pred)))
        return samples
    raise ValueError(f'no prediction packing for codebase {codebase!r}')


def _labels(codebase: str, samples: List[Any]) -> torch.Tensor:
    if codebase == 'mmpretrain':
        return torch.cat([s.pred_label for s in samples])
    return torch.cat([s.pred_sem_seg.data.flatten() for s in samples])


def evaluate_sessions(cfg: Any, codebase: str, sessions: Dict[str, Any], preprocessor: Any,
                      input_hw: Optional[Tuple[int, int]], with_argmax: bool = False,
                      ) -> Dict[str, Any]:
    """Evaluate every session of ``sessions`` (name -> onnxruntime session) on the val set.

    Returns ``metrics`` (name -> the evaluator's dict), ``images`` and ``agreement`` of the
    predictions with those of the first session (top-1 labels / pixels, a fraction).
    """
    from mmengine.evaluator import Evaluator
    dataset = build_dataset(cfg, 'val_dataloader', input_hw, codebase, 'validation')
    evaluators = {}
    for name in sessions:
        evaluator = Evaluator(copy.deepcopy(cfg.val_evaluator))
        evaluator.dataset_meta = dataset.metainfo
        evaluators[name] = evaluator
    names = list(sessions)
    first = sessions[names[0]]
    input_name = first.get_inputs()[0].name
    expected = first.get_inputs()[0].shape
    same = {name: 0 for name in names[1:]}
    total = 0
    for index in range(len(dataset)):
        array, samples = to_onnx_input(dataset[index], preprocessor, expected,
                                       f'val image {index} of val_dataloader.dataset')
        labels = {}
        for name in names:
            outputs = sessions[name].run(None, {input_name: array})
            packed = pack_predictions(codebase, outputs, copy.deepcopy(samples), with_argmax)
            labels[name] = _labels(codebase, packed)
            evaluators[name].process(data_samples=packed, data_batch=None)
        total += labels[names[0]].numel()
        for name in names[1:]:
            same[name] += int((labels[name] == labels[names[0]]).sum())
    metrics = {name: {k: float(v) for k, v in evaluators[name].evaluate(len(dataset)).items()}
               for name in names}
    unit = 'images' if codebase == 'mmpretrain' else 'pixels'
    return dict(metrics=metrics, images=len(dataset),
                agreement={name: dict(fraction=same[name] / total, of=total, unit=unit,
                                      against=names[0]) for name in names[1:]})
