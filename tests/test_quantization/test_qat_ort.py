"""The QAT result meets onnxruntime's int8 deployment: the converted / folded model exported to
ONNX and quantized by ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel symmetric
int8 weights, uint8 activations) holds exactly the int8 kernels the QAT forward used."""
import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from torch import nn

from rep_mm import reparameterize
from rep_mm.quantization.qat import (eqk_blocks, fake_quant_weight, fold_bn, insert_bn,
                                     inserted_bn_modules, prepare_eqk_qat, strip_eqk_qat,
                                     weight_scale)

from .test_qat_insert_bn import build_digits_model, digits_batches, logits


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


class Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.items = iter([{'input': x[i:i + 1].numpy()} for x in batches for i in range(4)])

    def get_next(self):
        return next(self.items, None)


def ort_int8_kernels(model: nn.Module, batches, tmp_path):
    """``{conv weight name: (int8 array, scale array)}`` of the quantized ONNX graph."""
    fp32, int8 = tmp_path / 'model.onnx', tmp_path / 'model_int8.onnx'
    torch.onnx.export(Logits(model).eval(), (batches[0][:1],), str(fp32), input_names=['input'],
                      output_names=['output'], opset_version=17, dynamo=False)
    quantize_static(str(fp32), str(int8), Reader(batches), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8, op_types_to_quantize=['Conv'])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(int8)).graph.initializer}
    kernels = {}
    for name, value in inits.items():
        if name.endswith('.weight_quantized'):
            base = name[:-len('_quantized')]
            kernels[base[len('model.'):]] = (value, inits[f'{base}_scale'])
    return kernels


def torch_int8(kernel: torch.Tensor) -> torch.Tensor:
    """The integers of ``fake_quant_weight(kernel)`` (exact: ``fq = s q`` with |q| <= 127)."""
    return torch.round(fake_quant_weight(kernel) / weight_scale(kernel).reshape(-1, 1, 1, 1))


def assert_same_int8(kernels, expected):
    """onnxruntime's int8 kernels are those of the fake quantization: identical scales, and
    identical integers except where ``W / s`` is a rounding tie (onnxruntime divides by
    ``s``, torch's fake-quant op multiplies by ``1 / s``; measured: 3 of 3.7 million values
    of random kernels), where they differ by exactly 1. Returns the number of such ties."""
    assert set(kernels) == set(expected)
    ties = 0
    for name, (q, scale) in kernels.items():
        kernel = expected[name]
        assert q.dtype == np.int8
        assert np.array_equal(scale, weight_scale(kernel).numpy()), name
        diff = torch.from_numpy(q.astype(np.float32)) - torch_int8(kernel)
        ratio = kernel.double() / torch.from_numpy(scale).double().reshape(-1, 1, 1, 1)
        distance_to_tie = ((ratio - ratio.floor()) - 0.5).abs()
        off = diff != 0
        assert bool((diff[off].abs() == 1).all()), name
        assert bool((distance_to_tie[off] <= 1e-6 * ratio[off].abs()).all()), name
        ties += int(off.sum())
    total = sum(q.size for q, _ in kernels.values())
    assert ties <= 1e-4 * total
    return ties


@pytest.fixture(scope='module')
def batches(data_root):
    return digits_batches(data_root, 3, split='val')  # test pipeline: deterministic


def _step(model, batches, steps=2):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(steps):
        out = logits(model, batches[step])
        loss = out.logsumexp(1).mean() - out[:, step].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_equivalent_kernel_qat_int8_kernels_in_onnxruntime(batches, tmp_path):
    model = build_digits_model()
    prepare_eqk_qat(model)
    _step(model, batches)
    logits(model, batches[2])
    last = {f'{name}.rbr_reparam.weight': b.last_kernel for name, b in eqk_blocks(model)}
    reparameterize(model)
    strip_eqk_qat(model)
    kernels = ort_int8_kernels(model, batches, tmp_path)
    assert len(kernels) == 7
    assert_same_int8(kernels, {k: model.get_submodule(k[:-len('.weight')]).weight.detach()
                               for k in kernels})
    for name, kernel in last.items():  # ... which are the trained fake-quant kernels
        weight = model.get_submodule(name[:-len('.weight')]).weight.detach()
        assert torch.equal(fake_quant_weight(weight), kernel), name


def test_after_conversion_qat_int8_kernels_in_onnxruntime(batches, tmp_path):
    model = build_digits_model(deploy=True)
    insert_bn(model, batches[:2], logits)
    _step(model, batches)
    model.eval()
    trained = {f'{name}.weight': m.folded_weight_bias(m.bn.running_mean, m.bn.running_var)[0]
               .detach() for name, m in inserted_bn_modules(model)}
    folded = copy.deepcopy(model)
    fold_bn(folded)
    kernels = ort_int8_kernels(folded, batches, tmp_path)
    assert len(kernels) == 7
    assert_same_int8(kernels, trained)



def test_weight_fake_quant_matches_onnxruntime_quantizer():
    """Scales and integers of ``fake_quant_weight`` against onnxruntime's own weight
    quantizer (``compute_scale_zp`` symmetric int8 + ``quantize_nparray``), channel by
    channel, on random kernels with an all-zero channel."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp, quantize_nparray
    generator = torch.Generator().manual_seed(0)
    expected, kernels = {}, {}
    for i in range(8):
        kernel = torch.randn(64, 16, 3, 3, generator=generator) * torch.rand(
            64, 1, 1, 1, generator=generator)
        kernel[3] = 0  # scale 1.0 in both
        q, scales = [], []
        for channel in kernel.numpy():
            zero, scale = compute_scale_zp(np.array(channel.min()), np.array(channel.max()),
                                           np.array(-127, dtype=np.int8),
                                           np.array(127, dtype=np.int8), symmetric=True)
            assert int(zero) == 0
            q.append(quantize_nparray(onnx.TensorProto.INT8, channel, np.float32(scale), zero))
            scales.append(np.float32(scale))
        expected[f'k{i}'] = kernel
        kernels[f'k{i}'] = (np.stack(q), np.array(scales, dtype=np.float32))
    assert float(weight_scale(expected['k0'])[3]) == 1.0
    assert_same_int8(kernels, expected)
