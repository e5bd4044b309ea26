"""``rep-mm quantize`` end to end (digits classifier, PSPNet on digit scenes) and its bad inputs.

The models have random weights with randomised BN statistics (``--random-init``): accuracies
mean nothing, but every step runs for real (mmdeploy export, onnxruntime static QDQ
quantization, the config's own metric), and the metric is recomputed here without mm code.
"""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rep_mm.quantization import EXIT_BAD_INPUT, EXIT_OK, main

REPO = Path(__file__).resolve().parents[2]
CLS_CONFIG = str(REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py')
SEG_CONFIG = str(REPO / 'configs' / 'pspnet' /
                 'pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py')
DET_CONFIG = str(REPO / 'configs' / 'retinanet' /
                 'retinanet_repvgg-tiny_fpn_1xb8-2k_digit-scenes-128x128.py')


@pytest.fixture(scope='module')
def cls_run(tmp_path_factory, data_root):
    work = tmp_path_factory.mktemp('quant_cls')
    code = main([CLS_CONFIG, '--random-init', '--work-dir', str(work), '--calib', '64',
                 '--runs', '20', '--quiet', '--cfg-options', f'data_root={data_root}'])
    assert code == EXIT_OK
    return work, json.loads((work / 'quant_report.json').read_text())


@pytest.fixture(scope='module')
def scenes_root(tmp_path_factory):
    from rep_mm.datasets import prepare_digit_scenes
    root = tmp_path_factory.mktemp('scenes') / 'digit_scenes'
    prepare_digit_scenes(root, num_train=12, num_val=6, size=64, seed=0)
    return str(root)


def weight_scales(path):
    """Shapes of the scales of the DequantizeLinear nodes that feed Conv weights."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    shapes = []
    for node in model.graph.node:
        if node.op_type == 'Conv':
            dq = produced.get(node.input[1])
            assert dq is not None and dq.op_type == 'DequantizeLinear'
            assert inits[dq.input[0]].dtype == np.int8  # int8 weights
            shapes.append(inits[dq.input[1]].shape)
    return shapes


def independent_top1(onnx_path, data_root, mean=78.9, std=89.0):
    """(correct, total) top-1 of an ONNX classifier on the digits test split, computed with
    cv2 + numpy (no mm code)."""
    import cv2
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    classes = sorted(p.name for p in (Path(data_root) / 'test').iterdir() if p.is_dir())
    correct = total = 0
    for label, name in enumerate(classes):
        for image in sorted((Path(data_root) / 'test' / name).glob('*.png')):
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR).astype(np.float32)
            x = ((bgr - mean) / std).transpose(2, 0, 1)[None]
            scores = session.run(None, {'input': x})[0]
            correct += int(scores[0].argmax() == label)
            total += 1
    return correct, total


def test_classification_end_to_end(cls_run, data_root):
    work, report = cls_run
    assert report['task'] == 'classification'
    assert report['export']['passed'] and report['fp32_graph']['batch_norm_nodes'] == 0
    assert report['calibration'] == {**report['calibration'], 'requested': 64, 'used': 64}
    # every Conv runs as an int8 kernel in onnxruntime; the head (fc + softmax) stays float
    kernels = report['int8_kernels']
    assert kernels['int8_kernels'].get('QLinearConv') == report['fp32_graph']['conv_nodes']
    assert kernels['float_compute_ops'] == {'Gemm': 1}
    assert [n.split('/')[-1] for n in report['quantization']['float_nodes']] == \
        ['Softmax', 'Gemm']
    # per-channel int8 weights: one scale per output channel of every Conv
    scales = weight_scales(work / 'end2end_int8.onnx')
    assert len(scales) == report['fp32_graph']['conv_nodes']
    assert all(len(s) == 1 and s[0] > 1 for s in scales)
    # the config's Accuracy on the val set equals top-1 recomputed without mm code
    metrics = report['evaluation']['metrics']
    for name, path in (('fp32', work / 'end2end.onnx'), ('int8', work / 'end2end_int8.onnx')):
        correct, total = independent_top1(path, data_root)
        assert total == report['evaluation']['images'] == 360
        # mmpretrain's Accuracy computes in float32: the same count of correct images
        assert round(metrics[name]['accuracy/top1'] * total / 100) == correct
    latency = report['latency']
    assert latency['threads'] == 1 and latency['batch'] == 1 and latency['interleaved']
    for part in ('model', 'end_to_end'):
        for name in ('fp32', 'int8'):
            assert latency[part][name]['median_ms'] > 0
    assert latency['model_ratio'] == pytest.approx(
        latency['model']['int8']['median_ms'] / latency['model']['fp32']['median_ms'])


def test_reuse_folded_onnx_per_tensor(cls_run, data_root, tmp_path):
    """--onnx quantizes a given folded graph (no export); --per-tensor: one scale per Conv."""
    work, _ = cls_run
    out = tmp_path / 'per_tensor'
    code = main([CLS_CONFIG, '--onnx', str(work / 'end2end.onnx'), '--work-dir', str(out),
                 '--calib', '16', '--runs', '5', '--per-tensor',
                 '--cfg-options', f'data_root={data_root}'])
    assert code == EXIT_OK
    report = json.loads((out / 'quant_report.json').read_text())
    assert report['export']['passed'] is None and report['calibration']['used'] == 16
    assert report['quantization']['weights'] == 'int8 per-tensor'
    scales = weight_scales(out / 'end2end_int8.onnx')
    assert scales and all(s == () for s in scales)
    assert not (out / 'end2end.onnx').exists()  # the input graph is not copied or rewritten


def test_segmentation_end_to_end(tmp_path, scenes_root):
    work = tmp_path / 'seg'
    code = main([SEG_CONFIG, '--random-init', '--work-dir', str(work), '--calib', '6',
                 '--runs', '5', '--quiet', '--cfg-options', f'data_root={scenes_root}'])
    assert code == EXIT_OK
    report = json.loads((work / 'quant_report.json').read_text())
    assert report['task'] == 'segmentation' and report['calibration']['used'] == 6
    # the train pipeline got mmdeploy's static Resize (64 -> the graph's 192) before loading
    # the annotations
    assert report['calibration']['pipeline'][1].startswith('Resize(scale=(192, 192)')
    # all but the classifier conv (conv_seg, kept float with the Resize after it) run int8
    kernels = report['int8_kernels']
    assert kernels['int8_kernels'].get('QLinearConv') == report['fp32_graph']['conv_nodes'] - 1
    assert kernels['float_compute_ops'] == {'Conv': 1}
    assert any('conv_seg' in n for n in report['quantization']['float_nodes'])
    evaluation = report['evaluation']
    assert evaluation['images'] == 6
    assert evaluation['agreement']['int8']['of'] == 6 * 64 * 64  # at the original size
    for name in ('fp32', 'int8'):
        assert set(evaluation['metrics'][name]) == {'aAcc', 'mIoU', 'mAcc'}
    assert report['latency']['input_shape'] == [1, 3, 192, 192]


@pytest.mark.parametrize('calib', ['0', '-3'])
def test_calib_not_positive(calib, tmp_path, capsys):
    code = main([CLS_CONFIG, '--random-init', '--work-dir', str(tmp_path / 'w'),
                 '--calib', calib])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert '--calib must be a positive number' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'w').exists()


def test_missing_calibration_set(tmp_path, capsys):
    code = main([CLS_CONFIG, '--random-init', '--work-dir', str(tmp_path / 'w'),
                 '--cfg-options', f'data_root={tmp_path / "nowhere"}'])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert 'calibration set (train_dataloader.dataset) could not be loaded' in err
    assert not (tmp_path / 'w').exists()


def test_calibration_wrong_shape(tmp_path, data_root, capsys):
    """A deploy config for 48x48 inputs: the digits train pipeline gives 32x32."""
    deploy = tmp_path / 'cls_48.py'
    base = REPO / 'configs' / 'deploy' / '_base_onnxruntime_static.py'
    deploy.write_text(f"_base_ = ['{base}']\n"
                      "onnx_config = dict(input_shape=[48, 48])\n"
                      "codebase_config = dict(type='mmpretrain', task='Classification')\n")
    code = main([CLS_CONFIG, '--random-init', '--work-dir', str(tmp_path / 'w'),
                 '--deploy-config', str(deploy), '--cfg-options', f'data_root={data_root}'])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert 'shape [1, 3, 32, 32], but the graph expects [1, 3, 48, 48]' in err
    assert not (tmp_path / 'w').exists()


def test_op_onnxruntime_cannot_quantize(tmp_path, capsys):
    code = main([CLS_CONFIG, '--random-init', '--work-dir', str(tmp_path / 'w'),
                 '--op-types', 'Conv,NonMaxSuppression'])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "cannot quantize op type(s) ['NonMaxSuppression']; allowed:" in err and 'Conv' in err


def test_not_folded_onnx(tmp_path, data_root, capsys):
    """A graph of the training form (branches + BN) is refused before quantization."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import rep_mm  # noqa: F401 - registers
    from rep_mm.verify.bn_statistics import randomize_bn_statistics
    cfg = Config.fromfile(CLS_CONFIG)
    init_default_scope('mmpretrain')
    model = randomize_bn_statistics(MODELS.build(cfg.model)).eval()

    class Scores(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x, mode='tensor').softmax(-1)

    path = tmp_path / 'training_form.onnx'
    torch.onnx.export(Scores(model), torch.randn(1, 3, 32, 32), str(path), dynamo=False,
                      opset_version=11, input_names=['input'], output_names=['output'])
    code = main([CLS_CONFIG, '--onnx', str(path), '--work-dir', str(tmp_path / 'w'),
                 '--cfg-options', f'data_root={data_root}'])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert 'is not a folded model' in err and 'int8 needs every block folded' in err
    assert not (tmp_path / 'w').exists()


def test_detection_refused(tmp_path, capsys):
    code = main([DET_CONFIG, '--random-init', '--work-dir', str(tmp_path / 'w')])
    assert code == EXIT_BAD_INPUT
    assert 'detectors are not supported' in capsys.readouterr().err
