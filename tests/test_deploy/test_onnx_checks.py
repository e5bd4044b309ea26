"""The export's comparisons (rep_mm.deploy.onnx_checks, rep_mm.deploy.checks.judge) with injected NaN:
they go through rep_mm.verify.compare, so a NaN / inf output is a failure, never a PASS."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from rep_mm.deploy.checks import judge
from rep_mm.deploy.onnx_checks import compare_outputs, compare_pre_nms, errors

TOLERANCE = 1e-5
# what rep_mm.deploy.graph.graph_checks returns for a graph that passes its checks
GRAPH = dict(batch_norm_nodes=0, scopes_named=False, blocks_not_one_conv=None, failures=[])


def verdict(comparisons, key='onnx_vs_converted', codebase='mmpretrain'):
    data = dict(comparisons=comparisons, graph=dict(GRAPH))
    return judge(data, key, codebase, TOLERANCE), data


def test_clean_outputs_pass():
    ref = [torch.randn(2, 10, dtype=torch.float64)]
    result = compare_outputs(ref, [ref[0].numpy().copy()], 'mmpretrain')
    assert result['comparable'] and result['finite'] and result['max_rel'] == 0.0
    assert verdict(dict(onnx_vs_converted=result))[0] == []


def test_nan_in_the_onnx_output_fails_judge_with_the_place():
    ref = torch.randn(1, 10)
    onnx_out = ref.numpy().copy()
    onnx_out[0, 7] = np.nan
    result = compare_outputs([ref], [onnx_out], 'mmpretrain')
    assert result['comparable'] and not result['finite'] and math.isnan(result['max_rel'])
    assert result['nonfinite'][0]['first_index'] == [0, 7]
    assert result['nonfinite'][0]['side'] == 'candidate'
    failures, _ = verdict(dict(onnx_vs_converted=result))
    assert len(failures) == 1 and 'onnx_vs_converted' in failures[0]
    assert 'NaN in the candidate only' in failures[0] and '[0, 7]' in failures[0]


def test_nan_in_both_is_not_a_pass_and_other_comparisons_count_too():
    ref = torch.randn(1, 4)
    ref[0, 1] = float('inf')
    same = compare_outputs([ref], [ref.numpy().copy()], 'mmpretrain')
    failures, _ = verdict(dict(onnx_vs_converted=same))
    assert failures and 'reference output itself is not finite' in failures[0]
    # the held comparison is fine, but the converted model is NaN against the training form
    clean = torch.randn(1, 4)
    broken = clean.clone()
    broken[0, 0] = float('nan')
    comparisons = dict(onnx_vs_training_form=compare_outputs([clean], [clean.numpy()],
                                                             'mmpretrain'),
                       converted_vs_training_form=compare_outputs([clean], [broken.numpy()],
                                                                  'mmpretrain'))
    failures, _ = verdict(comparisons, key='onnx_vs_training_form')
    assert len(failures) == 1 and failures[0].startswith('converted_vs_training_form')


def test_errors_checks_counts_and_empty_outputs():
    with pytest.raises(ValueError, match='1 reference outputs vs 2 ONNX outputs'):
        errors([np.zeros(1)], [np.zeros(1), np.zeros(1)])
    empty = errors([np.zeros((1, 0, 5))], [np.zeros((1, 0, 5))])
    assert empty['failures'] == ['nothing compared: every output tensor is empty']
    assert verdict(dict(onnx_vs_converted=dict(comparable=True, note='', **empty)))[0]


def test_detector_outputs_with_nan_scores_and_without_boxes():
    dets = torch.rand(1, 3, 5)
    labels = torch.tensor([[0, 2, 1]])
    bad = dets.numpy().copy()
    bad[0, 2, 4] = np.nan
    result = compare_outputs([dets, labels], [bad, labels.numpy()], 'mmdet')
    assert result['kept_boxes'] == 3 and not result['finite']
    clean_pre_nms = dict(comparable=True, note='', **errors([np.ones(3)], [np.ones(3)]))
    failures, _ = verdict(dict(onnx_vs_converted=result, pre_nms=clean_pre_nms),
                          codebase='mmdet')
    assert failures and '[0, 2, 4]' in failures[0]
    # no box kept: nothing after NMS to compare, the raw head outputs decide
    none = compare_outputs([torch.zeros(1, 0, 5), torch.zeros(1, 0, dtype=torch.long)],
                           [np.zeros((1, 0, 5), np.float32), np.zeros((1, 0), np.int64)],
                           'mmdet')
    assert none['comparable'] and none['failures'] == []
    assert verdict(dict(onnx_vs_converted=none, pre_nms=clean_pre_nms), codebase='mmdet')[0] \
        == []
    nan_pre_nms = dict(comparable=True, note='', **errors([np.ones(3)],
                                                          [np.array([1.0, np.nan, 1.0])]))
    failures, _ = verdict(dict(onnx_vs_converted=none, pre_nms=nan_pre_nms), codebase='mmdet')
    assert len(failures) == 1 and failures[0].startswith('pre-NMS head outputs')


class TinyHead(nn.Module):
    """A 'detector' whose raw output (``mode='tensor'``) is one 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)

    def forward(self, inputs, mode='tensor'):
        return (self.conv(inputs),)


def write_conv_graph(path, weight, bias):
    """An ONNX graph ``output = Conv(input; conv.weight, conv.bias)`` (no exporter needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node('Conv', ['input', 'conv.weight', 'conv.bias'], ['output'],
                          name='/conv/Conv')],
        'tiny', [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info('output', TensorProto.FLOAT, [1, 3, 4, 4])],
        initializer=[numpy_helper.from_array(weight, 'conv.weight'),
                     numpy_helper.from_array(bias, 'conv.bias')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_pre_nms_comparison_finds_a_nan_kernel_in_the_graph(tmp_path):
    torch.manual_seed(0)
    model = TinyHead().eval()
    inputs = torch.randn(1, 2, 4, 4)
    weight = model.conv.weight.detach().numpy().copy()
    bias = model.conv.bias.detach().numpy().copy()
    write_conv_graph(tmp_path / 'ok.onnx', weight, bias)
    ok = compare_pre_nms(model, None, inputs, tmp_path / 'ok.onnx')
    assert ok['comparable'] and ok['finite'] and ok['max_rel'] <= TOLERANCE

    weight[1, 0, 0, 0] = np.nan  # a fused kernel that went NaN before export
    write_conv_graph(tmp_path / 'nan.onnx', weight, bias)
    result = compare_pre_nms(model, None, inputs, tmp_path / 'nan.onnx')
    assert result['comparable'] and not result['finite'] and math.isnan(result['max_rel'])
    (finding,) = result['nonfinite']
    assert finding['name'] == 'conv' and finding['side'] == 'candidate'
    assert finding['count'] == 16 and finding['first_index'] == [0, 1, 0, 0]
    clean = compare_outputs([torch.ones(1, 3)], [np.ones((1, 3))], 'mmdet')
    failures, _ = verdict(dict(onnx_vs_converted=clean, pre_nms=result), codebase='mmdet')
    assert failures and 'tensor 0 (conv)' in failures[0]
