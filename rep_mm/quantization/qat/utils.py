"""Small helpers shared by the QAT flows: output comparison, fake-quant switches."""
import contextlib
from typing import Any, Iterator, List, Tuple

import torch
from torch import Tensor, nn

from .fake_quant import ActivationQuantizer

__all__ = ['flatten_tensors', 'output_errors', 'fake_quant_disabled', 'replace_submodule']


def flatten_tensors(obj: Any) -> List[Tensor]:
    """Every tensor in a (nested) tensor / tuple / list / dict output, in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in flatten_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in flatten_tensors(v)]
    return []


def output_errors(reference: Any, candidate: Any) -> Tuple[float, float]:
    """``(max |a - b|, max |a - b| / max |a|)`` over all tensors of two outputs (float64).

    Raises:
        ValueError: the outputs do not have the same tensors and shapes.
    """
    refs, cands = flatten_tensors(reference), flatten_tensors(candidate)
    if len(refs) != len(cands) or any(a.shape != b.shape for a, b in zip(refs, cands)):
        raise ValueError(f'outputs differ in structure: {[tuple(t.shape) for t in refs]} vs '
                         f'{[tuple(t.shape) for t in cands]}')
    if not refs:
        raise ValueError('the outputs contain no tensor to compare')
    diff = max(float((a.detach().double() - b.detach().double()).abs().max()) for a, b in
               zip(refs, cands))
    scale = max(float(a.detach().double().abs().max()) for a in refs)
    return diff, (diff / scale if scale > 0 else (0.0 if diff == 0 else float('inf')))


@contextlib.contextmanager
def fake_quant_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every QAT module of ``model`` computes in floating point (weights
    and activations not fake-quantized; observers still update in training mode)."""
    saved = []
    for module in model.modules():
        if isinstance(module, ActivationQuantizer):
            saved.append((module, 'enabled', module.enabled))
            module.enabled = False
        elif isinstance(getattr(module, 'fake_quant', None), bool):
            saved.append((module, 'fake_quant', module.fake_quant))
            module.fake_quant = False
    try:
        yield model
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set the submodule at dotted path ``name`` of ``model`` to ``new``."""
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)

