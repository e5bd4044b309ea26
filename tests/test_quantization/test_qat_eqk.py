"""QAT of the equivalent kernel (flow B, rep_mm.quantization.qat.eqk): gradients reach every
branch through the fusion, the int8 kernel of the converted block is bit for bit the kernel
fake-quantized in the last training forward, and every covered block type / variant obeys it."""
import copy

import pytest
import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.blocks import OREPARepVGGBlock, RepOptVGGBlock, RepVGGBlock
from rep_mm.quantization.qat import (QATError, eqk_blocks, fake_quant_disabled,
                                     fake_quant_weight, prepare_eqk_qat, quantize_weight_int8,
                                     strip_eqk_qat, weight_scale)
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import relative_error
from .test_qat_insert_bn import (TOLERANCE, build_deploy_config_model, build_digits_model,
                                 digits_batches, logits)


def assert_int8_identity(block: nn.Module, last_kernel: torch.Tensor) -> None:
    """After conversion: int8 per-channel quantization of ``rbr_reparam.weight`` dequantizes to
    exactly ``last_kernel`` (the fake-quantized kernel of the last training forward)."""
    weight = block.rbr_reparam.weight
    q, scale = quantize_weight_int8(weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.equal(scale, weight_scale(last_kernel))  # fq(K) has the same per-channel max
    assert torch.equal(q.float() * scale.reshape(-1, 1, 1, 1), last_kernel)
    assert torch.equal(fake_quant_weight(weight.detach()), last_kernel)


def test_digits_model_int8_kernel_is_the_trained_one(data_root):
    batches = digits_batches(data_root, 4)
    model = build_digits_model()
    reference = copy.deepcopy(model).eval()
    report = prepare_eqk_qat(model)
    assert len(report['covered']) == 7 and report['uncovered'] == []
    # with fake quantization off, the QAT forward is the model's own function (eval mode)
    model.eval()
    with torch.no_grad(), fake_quant_disabled(model):
        assert relative_error(logits(reference, batches[0]), logits(model, batches[0])) <= \
            TOLERANCE
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    block = model.backbone.stage2[1]
    running_before = block.rbr_1x1.bn.running_mean.clone()
    for step, x in enumerate(batches[:3]):
        out = logits(model, x)
        loss = out.logsumexp(1).mean() - out[:, step].mean()
        optimizer.zero_grad()
        loss.backward()
        # gradients reach every branch through the fused kernel
        for param in (block.rbr_dense.conv.weight, block.rbr_1x1.conv.weight,
                      block.rbr_1x1.bn.weight, block.rbr_identity.weight,
                      block.rbr_identity.bias):
            assert param.grad is not None and float(param.grad.abs().max()) > 0
        optimizer.step()
    assert not torch.equal(running_before, block.rbr_1x1.bn.running_mean)  # BN stats tracked
    logits(model, batches[3])  # the last training forward (after the last step)
    last = {name: b.last_kernel for name, b in eqk_blocks(model)}
    reparameterize(model)
    for name, b in eqk_blocks(model):
        assert b.deploy
        assert_int8_identity(b, last[name])
    # the converted model, stripped of QAT, is a plain deploy-form model
    strip_eqk_qat(model)
    assert not eqk_blocks(model) and type(model.backbone.stage0) is RepVGGBlock
    deploy = build_deploy_config_model()
    deploy.load_state_dict(model.state_dict(), strict=True)


VARIANTS = [
    (RepVGGBlock, dict(in_channels=8, out_channels=8)),
    (RepVGGBlock, dict(in_channels=8, out_channels=16, stride=2)),
    (RepVGGBlock, dict(in_channels=8, out_channels=8, groups=4, dilation=2)),
    (RepVGGBlock, dict(in_channels=8, out_channels=8, kernel_size=5, padding_mode='reflect')),
    (RepVGGBlock, dict(in_channels=8, out_channels=8, se_position='pre', se_ratio=4)),
    (RepVGGBlock, dict(in_channels=8, out_channels=8, se_position='post', se_ratio=4,
                       use_identity=False)),
    (RepOptVGGBlock, dict(in_channels=8, out_channels=8, mode='target')),
    (RepOptVGGBlock, dict(in_channels=8, out_channels=8, mode='csla')),
    (RepOptVGGBlock, dict(in_channels=8, out_channels=8, mode='hs')),
    (OREPARepVGGBlock, dict(in_channels=8, out_channels=8)),
]


@pytest.mark.parametrize('cls,kwargs', VARIANTS,
                         ids=[f'{c.__name__}-{"-".join(f"{k}={v}" for k, v in a.items())}'
                              for c, a in VARIANTS])
def test_covered_blocks(cls, kwargs):
    torch.manual_seed(0)
    block = cls(**kwargs)
    randomize_bn_statistics(block, 1)
    reference = copy.deepcopy(block).eval()
    prepare_eqk_qat(block)
    x = [torch.randn(4, 8, 12, 12) for _ in range(3)]
    block.eval()
    with torch.no_grad(), fake_quant_disabled(block):
        assert relative_error(reference(x[0]), block(x[0])) <= TOLERANCE
    block.train()
    optimizer = torch.optim.SGD(block.parameters(), lr=0.05)
    for xi in x[:2]:
        optimizer.zero_grad()
        block(xi).square().mean().backward()
        optimizer.step()
    block(x[2])
    last = block.last_kernel
    block.switch_to_deploy()
    assert_int8_identity(block, last)
    # the converted QAT block computes the same fake-quantized function (eval mode)
    with torch.no_grad():
        out = block.eval()(x[2])
        assert torch.equal(block.last_kernel, last)
        strip_eqk_qat(block)
        plain = block(x[2])
        assert relative_error(plain, out) > 0  # quantization changed the output
        assert relative_error(plain, out) < 0.1


def test_bad_inputs():
    with pytest.raises(QATError, match='no block covered'):
        prepare_eqk_qat(nn.Sequential(nn.Conv2d(3, 3, 3)))
    model = build_digits_model()
    prepare_eqk_qat(model)
    with pytest.raises(QATError, match='already prepared'):
        prepare_eqk_qat(model)
