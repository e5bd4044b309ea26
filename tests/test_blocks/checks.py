"""Assertions shared by the block tests: golden outputs of the original code, idempotent
conversion, half-precision conversion."""
import copy
from typing import Callable, Tuple

import torch
from torch import nn

from rep_mm import reparameterize

from ..conftest import relative_error


def assert_converts_exactly(block: nn.Module, x: torch.Tensor, tolerance: float, fused_name: str,
                            randomize: Callable[[nn.Module, int], nn.Module],
                            ignore: Tuple[str, ...] = ()) -> nn.Module:
    """``randomize(block, x.numel())``, then the eval outputs of a converted copy match to
    ``tolerance`` (relative) and the copy holds one conv, ``fused_name``, and no BatchNorm
    (modules under the ``ignore`` prefixes, e.g. SE, are not counted). Returns the copy."""
    randomize(block, x.numel()).eval()
    with torch.no_grad():
        expected = block(x)
        deployed = copy.deepcopy(block)
        deployed.switch_to_deploy()
        actual = deployed(x)
    assert actual.shape == expected.shape
    assert relative_error(expected, actual) <= tolerance
    convs = [name for name, m in deployed.named_modules()
             if isinstance(m, nn.Conv2d) and not (ignore and name.startswith(ignore))]
    assert convs == [fused_name]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    return deployed


def check_golden_block(cls, golden: dict, convert: str = 'switch_to_deploy',
                       state_atol: float = 1e-6, direct: bool = True) -> nn.Module:
    """``cls`` built as the original code built ``golden``: same keys (in order) and outputs in
    training form; after ``convert`` the same deploy keys, values and outputs; and (``direct``)
    the deploy-form constructor loads the deploy state dict strictly. Returns the converted."""
    block = cls(**golden['builder']['kwargs'])
    assert list(block.state_dict()) == list(golden['train_state_dict'])
    block.load_state_dict(golden['train_state_dict'], strict=True)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(golden['input']), golden['train_output'],
                                   rtol=1e-5, atol=1e-5)
        getattr(block, convert)()
        assert list(block.state_dict()) == list(golden['deploy_state_dict'])
        for key, value in golden['deploy_state_dict'].items():
            torch.testing.assert_close(block.state_dict()[key], value, rtol=1e-5,
                                       atol=state_atol)
        torch.testing.assert_close(block(golden['input']), golden['deploy_output'],
                                   rtol=1e-5, atol=1e-5)
    if direct:
        deployed = cls(**golden['builder']['deploy_kwargs'])
        deployed.load_state_dict(golden['deploy_state_dict'], strict=True)
    return block


def check_train_mode_conversion(block: nn.Module, fused_name: str, x: torch.Tensor) -> None:
    """Converting in train mode folds the BN *running* statistics (the eval-mode function is
    kept to 1e-5) and leaves the block and its fused module in train mode."""
    with torch.no_grad():
        expected = block.eval()(x)
    block.train()
    block.switch_to_deploy()
    assert block.training and getattr(block, fused_name).training
    with torch.no_grad():
        assert relative_error(expected, block.eval()(x)) <= 1e-5


def check_second_conversion_is_noop(block: nn.Module, fused_name: str) -> None:
    """Converting a converted block keeps its fused module and every value."""
    block.switch_to_deploy()
    state = {k: v.clone() for k, v in block.state_dict().items()}
    fused = getattr(block, fused_name)
    report = reparameterize(block)
    assert getattr(block, fused_name) is fused and report.already_deployed == ['']
    assert all(torch.equal(state[k], v) for k, v in block.state_dict().items())


def check_half_precision_conversion(block: nn.Module, fused_name: str, dtype: torch.dtype,
                                    x: torch.Tensor) -> None:
    """A float16 / bfloat16 block converts in that dtype and loses only the final rounding of
    the fused kernel: relative error to the float32 training form <= 2e-3 (fp16), 1e-2 (bf16)."""
    block = block.eval()
    with torch.no_grad():
        expected = block(x)  # float32 reference
    block = block.to(dtype)
    block.switch_to_deploy()
    assert getattr(block, fused_name).weight.dtype == dtype
    with torch.no_grad():
        actual = block.float()(x)
    assert relative_error(expected, actual) <= (1e-2 if dtype == torch.bfloat16 else 2e-3)
