"""Finding the conv-BN pairs of any conv net by tracing one forward pass (no names, no code)."""
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['example_input', 'find_conv_bn_pairs']


def example_input(module: nn.Module, size: Sequence[int]) -> Tensor:
    """A random ``(1, C, *size)`` input, ``C`` the input channels of the first ``Conv2d``, on
    its device and in its dtype.

    Raises:
        ValueError: ``module`` has no ``Conv2d``.
    """
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f'{type(module).__name__} has no Conv2d: nothing to re-parameterize')
    return torch.randn(1, first.in_channels, *size, dtype=first.weight.dtype,
                       device=first.weight.device)


@torch.no_grad()
def find_conv_bn_pairs(module: nn.Module, example_input: Tensor) -> List[Tuple[str, str]]:
    """``[(conv path, BN path)]``: BatchNorms whose input tensor IS a ``Conv2d``'s output.

    Found with forward hooks during one eval-mode forward pass on ``example_input``.

    Raises:
        ValueError: a paired conv or BN runs more than once per forward (shared module).
    """
    names = {id(m): n for n, m in module.named_modules()}
    outputs: Dict[int, Tuple[str, Tensor]] = {}
    calls: Counter = Counter()
    pairs: List[Tuple[str, str]] = []

    def after_conv(conv, _, out):
        calls[names[id(conv)]] += 1
        outputs[id(out)] = (names[id(conv)], out)

    def before_norm(norm, inputs):
        calls[names[id(norm)]] += 1
        hit = outputs.get(id(inputs[0]))
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], names[id(norm)]))

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(after_conv))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(before_norm))
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        module(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode
    shared = [n for pair in pairs for n in pair if calls[n] != 1]
    if shared:
        raise ValueError(f'modules {sorted(set(shared))} run more than once per forward; a '
                         f'shared conv-BN pair cannot be swapped for one re-param block')
    return pairs
