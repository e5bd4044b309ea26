"""Per-tensor QAT (``weight_quant='per_tensor'``) meets a per-tensor onnxruntime deployment
(``rep-mm quantize --per-tensor``: ``quantize_static(per_channel=False)``): one symmetric int8
scale per kernel, the same scale and integers as onnxruntime's, for both QAT flows."""
import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from rep_mm import reparameterize
from rep_mm.quantization.qat import (QATError, WEIGHT_GRANULARITIES, BNConv2d, eqk_blocks,
                                     fake_quant_weight, fold_bn, insert_bn,
                                     inserted_bn_modules, prepare_eqk_qat,
                                     quantize_weight_int8, strip_eqk_qat, weight_scale)

from .test_qat_insert_bn import build_digits_model, digits_batches, logits
from .test_qat_ort import Logits, Reader, _step


def per_tensor_ints(kernel: torch.Tensor) -> torch.Tensor:
    """The integers of the per-tensor ``fake_quant_weight`` (exact: ``fq = s q``)."""
    scale = weight_scale(kernel, 'per_tensor')
    assert scale.shape == (1,)
    return torch.round(fake_quant_weight(kernel, 'per_tensor') / scale)


def assert_same_per_tensor_int8(kernels, expected):
    """Same scale (one per kernel, bit for bit) and integers; an integer may differ by one only
    at an exact rounding tie of ``W / s`` (onnxruntime divides, torch multiplies by 1 / s)."""
    assert set(kernels) == set(expected)
    ties = 0
    for name, (q, scale) in kernels.items():
        kernel = expected[name]
        assert q.dtype == np.int8 and np.asarray(scale).size == 1, name
        assert np.float32(scale) == weight_scale(kernel, 'per_tensor').numpy()[0], name
        diff = torch.from_numpy(q.astype(np.float32)) - per_tensor_ints(kernel)
        ratio = kernel.double() / float(np.float32(scale))
        off = diff != 0
        assert bool((diff[off].abs() == 1).all()), name
        assert bool(((ratio - ratio.floor() - 0.5).abs()[off] <= 1e-6 * ratio[off].abs()).all())
        ties += int(off.sum())
    assert ties <= 1e-4 * sum(q.size for q, _ in kernels.values())


def ort_per_tensor_kernels(model, batches, tmp_path):
    """``{conv weight name: (int8 array, scale)}`` of the graph quantized per tensor."""
    fp32, int8 = tmp_path / 'model.onnx', tmp_path / 'model_int8.onnx'
    torch.onnx.export(Logits(model).eval(), (batches[0][:1],), str(fp32), input_names=['input'],
                      output_names=['output'], opset_version=17, dynamo=False)
    quantize_static(str(fp32), str(int8), Reader(batches), quant_format=QuantFormat.QDQ,
                    per_channel=False, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8, op_types_to_quantize=['Conv'])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(int8)).graph.initializer}
    return {name[len('model.'):-len('_quantized')]: (value, inits[f'{name[:-10]}_scale'])
            for name, value in inits.items() if name.endswith('.weight_quantized')}


@pytest.fixture(scope='module')
def batches(data_root):
    return digits_batches(data_root, 3, split='val')


def test_per_tensor_fake_quant_matches_onnxruntime_quantizer():
    from onnxruntime.quantization.quant_utils import compute_scale_zp, quantize_nparray
    generator = torch.Generator().manual_seed(1)
    kernels, expected = {}, {}
    for i in range(6):
        kernel = torch.randn(32, 8, 3, 3, generator=generator) * (i + 1) ** 2
        array = kernel.numpy()
        zero, scale = compute_scale_zp(np.array(array.min()), np.array(array.max()),
                                       np.array(-127, dtype=np.int8),
                                       np.array(127, dtype=np.int8), symmetric=True)
        assert int(zero) == 0
        kernels[f'k{i}'] = (quantize_nparray(onnx.TensorProto.INT8, array, np.float32(scale),
                                             zero), np.float32(scale))
        expected[f'k{i}'] = kernel
    assert_same_per_tensor_int8(kernels, expected)
    # the real int8 quantization dequantizes to the fake-quantized kernel
    kernel = expected['k2']
    q, scale = quantize_weight_int8(kernel, 'per_tensor')
    assert q.dtype == torch.int8 and scale.shape == (1,)
    assert torch.equal(q.float() * scale, fake_quant_weight(kernel, 'per_tensor'))
    # per tensor is coarser than per channel on kernels with unequal channel ranges
    ranged = kernel * torch.linspace(0.01, 1, 32).reshape(-1, 1, 1, 1)
    err = {g: float((fake_quant_weight(ranged, g) - ranged).abs().mean())
           for g in WEIGHT_GRANULARITIES}
    assert err['per_tensor'] > 2 * err['per_channel']


def test_equivalent_kernel_qat_per_tensor_in_onnxruntime(batches, tmp_path):
    model = build_digits_model()
    prepare_eqk_qat(model, weight_quant='per_tensor')
    assert all(b.weight_quant == 'per_tensor' for _, b in eqk_blocks(model))
    _step(model, batches)
    logits(model, batches[2])
    last = {f'{name}.rbr_reparam.weight': b.last_kernel for name, b in eqk_blocks(model)}
    for kernel in last.values():  # one scale: at most 255 distinct values in the kernel
        assert kernel.unique().numel() <= 255
    reparameterize(model)
    strip_eqk_qat(model)
    kernels = ort_per_tensor_kernels(model, batches, tmp_path)
    assert len(kernels) == 7
    weights = {k: model.get_submodule(k[:-len('.weight')]).weight.detach() for k in kernels}
    assert_same_per_tensor_int8(kernels, weights)
    for name, kernel in last.items():
        assert torch.equal(fake_quant_weight(weights[name], 'per_tensor'), kernel), name


def test_after_conversion_qat_per_tensor_in_onnxruntime(batches, tmp_path):
    model = build_digits_model(deploy=True)
    insert_bn(model, batches[:2], logits, weight_quant='per_tensor')
    assert all(m.weight_quant == 'per_tensor' for _, m in inserted_bn_modules(model))
    _step(model, batches)
    model.eval()
    trained = {f'{name}.weight': m.folded_weight_bias(m.bn.running_mean, m.bn.running_var)[0]
               .detach() for name, m in inserted_bn_modules(model)}
    folded = copy.deepcopy(model)
    fold_bn(folded)
    kernels = ort_per_tensor_kernels(folded, batches, tmp_path)
    assert len(kernels) == 7
    assert_same_per_tensor_int8(kernels, trained)


def test_weight_quant_bad_values():
    from mmengine.registry import MODELS

    from .test_qat_insert_bn import digits_config
    with pytest.raises(QATError, match='weight_quant must be one of'):
        MODELS.build(dict(type='rep_mm.QATModel', flow='equivalent_kernel',
                          weight_quant='per_row', model=digits_config().model))
    with pytest.raises(QATError, match='weight_quant must be one of'):
        prepare_eqk_qat(build_digits_model(), weight_quant='channel')
    with pytest.raises(QATError, match='weight_quant must be one of'):
        BNConv2d(torch.nn.Conv2d(3, 4, 3), weight_quant='tensor')
    with pytest.raises(ValueError, match='weight_quant must be one of'):
        fake_quant_weight(torch.ones(4, 3, 3, 3), 'row')
