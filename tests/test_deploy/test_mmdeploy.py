"""mmdeploy's own entry point, the SDK and dynamic shapes.

* ``mmdeploy.apis.torch2onnx`` called directly (what mmdeploy's ``tools/deploy.py`` calls; that
  script is not in the mmdeploy wheel, so it cannot be run here) on rep_mm's model configs
  exports with the TorchScript exporter, with rep_mm's deploy configs (``dynamo=False``) and
  with stock-style ones (no ``dynamo`` key); ``dynamo=True`` still selects dynamo. The graph
  runs in onnxruntime like the PyTorch model (random weights, randomised BN statistics).
* ``rep-mm export`` with the dynamic deploy configs: the graph at two or more sizes (and batch 2)
  against PyTorch, and the work dir run in the mmdeploy SDK (``mmdeploy_runtime``).
"""
import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdeploy')
ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

from rep_mm.deploy import export  # noqa: E402
from rep_mm.deploy.sdk_check import match_detections  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLS = str(ROOT / 'configs/repvgg/repvgg-tiny_1xb32_digits.py')
SEG = str(ROOT / 'configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py')
DET = str(ROOT / 'configs/retinanet/retinanet_repvgg-tiny_fpn_1xb8-2k_digit-scenes-128x128.py')
DEPLOY = ROOT / 'configs' / 'deploy'

# a deploy config as mmdeploy ships them: no `dynamo` key anywhere
STOCK_STYLE = """
onnx_config = dict(type='onnx', export_params=True, keep_initializers_as_inputs=False,
                   opset_version=11, save_file='end2end.onnx', input_names=['input'],
                   output_names={outputs}, input_shape=None, optimize=False)
backend_config = dict(type='onnxruntime')
codebase_config = {codebase}
"""


def _checkpoint(config: str, path: Path, seed: int = 0) -> torch.nn.Module:
    """Training-form weights (random, randomised BN statistics) saved as a Runner-style
    checkpoint; returns the model (eval mode)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from rep_mm.verify.bn_statistics import randomize_bn_statistics
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(seed)
    model = randomize_bn_statistics(MODELS.build(cfg.model), seed).eval()
    torch.save(dict(meta=dict(iter=1), state_dict=model.state_dict()), path)
    return model


def _reference(model, deploy_cfg_path, model_cfg_path, image):
    """Input tensor as mmdeploy makes it and the PyTorch outputs under mmdeploy's rewrites."""
    from mmdeploy.apis import build_task_processor
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_input_shape, load_config

    from rep_mm.deploy.onnx_checks import flatten_outputs
    deploy_cfg, model_cfg = load_config(str(deploy_cfg_path), model_cfg_path)
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    data, inputs = processor.create_input(str(image), get_input_shape(deploy_cfg),
                                          data_preprocessor=model.data_preprocessor)
    inputs = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    patched = patch_model(model, cfg=deploy_cfg, backend='onnxruntime', ir=IR.ONNX)
    with RewriterContext(cfg=deploy_cfg, backend='onnxruntime', ir=IR.ONNX, opset=11), \
            torch.no_grad():
        out = patched(inputs, copy.deepcopy(data['data_samples']), mode='predict')
    return inputs, [t.numpy() for t in flatten_outputs(out)]


def _assert_torchscript_graph(path: Path):
    graph_model = onnx.load(str(path))
    assert not Path(f'{path}.data').exists()  # the dynamo exporter writes weights beside
    assert {o.domain: o.version for o in graph_model.opset_import}[''] == 11
    # TorchScript node names carry the module path of the rep_mm backbone
    assert any(n.name.startswith('/backbone/') for n in graph_model.graph.node)
    assert not any(n.op_type == 'BatchNormalization' for n in graph_model.graph.node)


@pytest.mark.parametrize('task', ['classification', 'segmentation', 'detection'])
def test_mmdeploy_torch2onnx_directly(task, tmp_path):
    """mmdeploy's own torch2onnx, no rep_mm code around the call: classification and
    segmentation with stock-style deploy configs (no `dynamo` key), detection with rep_mm's
    shipped one (`dynamo=False`)."""
    from mmdeploy.apis import torch2onnx

    from rep_mm.datasets import prepare_digit_scenes
    from rep_mm.deploy import sample_image
    config = dict(classification=CLS, segmentation=SEG, detection=DET)[task]
    model = _checkpoint(config, tmp_path / 'iter_1.pth')
    if task == 'classification':
        deploy_cfg = tmp_path / 'deploy_cfg.py'
        deploy_cfg.write_text(STOCK_STYLE.format(
            outputs="['output']", codebase="dict(type='mmpretrain', task='Classification')"))
        image = sample_image('mmpretrain', tmp_path / 'digit.png')
    elif task == 'segmentation':
        deploy_cfg = tmp_path / 'deploy_cfg.py'
        deploy_cfg.write_text(STOCK_STYLE.format(
            outputs="['output']",
            codebase="dict(type='mmseg', task='Segmentation', with_argmax=False)"))
        # PSPNet's pooling needs the stride-4 map divisible by 6: a 192x192 scene
        prepare_digit_scenes(tmp_path / 'scenes', num_train=1, num_val=1, size=192, seed=1)
        image = tmp_path / 'scenes' / 'images' / 'val' / '00000.png'
    else:
        deploy_cfg = DEPLOY / 'detection_onnxruntime_static.py'
        image = sample_image('mmdet', tmp_path / 'scene.png')
    assert 'dynamo' not in deploy_cfg.read_text() or task == 'detection'

    torch2onnx(str(image), str(tmp_path / 'work'), 'end2end.onnx', str(deploy_cfg), config,
               model_checkpoint=str(tmp_path / 'iter_1.pth'), device='cpu')
    onnx_path = tmp_path / 'work' / 'end2end.onnx'
    _assert_torchscript_graph(onnx_path)

    inputs, reference = _reference(model, deploy_cfg, config, image)
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    outputs = session.run(None, {'input': inputs.numpy()})
    assert [o.shape for o in outputs] == [r.shape for r in reference]
    if task == 'detection':
        np.testing.assert_array_equal(outputs[1], reference[1])  # same kept boxes, labels
        assert reference[0].shape[1] > 0  # random weights keep boxes: not vacuous
        outputs, reference = outputs[:1], reference[:1]
    for out, ref in zip(outputs, reference):
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize('dynamo', [True, False, None])
def test_mmdeploy_export_follows_the_dynamo_key(dynamo, tmp_path):
    """mmdeploy's `apis.onnx.export` (what torch2onnx calls, same RewriterContext) on a small
    conv net: `dynamo=True` reaches the dynamo exporter (opset 18, weights in a side file, no
    module scopes in node names), `False` and no key the TorchScript one. (A whole model
    through dynamo takes minutes here: a small net keeps the test fast.)"""
    from mmdeploy.apis.onnx import export as mmdeploy_export
    from mmengine.config import Config
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1)).eval()
    opset = 18 if dynamo else 11
    onnx_cfg = dict(type='onnx', opset_version=opset, save_file='end2end.onnx',
                    input_names=['input'], output_names=['output'])
    if dynamo is not None:
        onnx_cfg['dynamo'] = dynamo
    deploy_cfg = Config(dict(onnx_config=onnx_cfg, backend_config=dict(type='onnxruntime'),
                             codebase_config=dict(type='mmpretrain', task='Classification')))
    x = torch.randn(1, 3, 12, 12)
    mmdeploy_export(net, x, str(tmp_path / 'end2end'), backend='onnxruntime',
                    input_names=['input'], output_names=['output'], opset_version=opset,
                    context_info=dict(deploy_cfg=deploy_cfg))
    path = tmp_path / 'end2end.onnx'
    graph_model = onnx.load(str(path))
    assert {o.domain: o.version for o in graph_model.opset_import}[''] == opset
    scoped = any(n.name.startswith('/0/') for n in graph_model.graph.node)
    assert scoped is (not dynamo)
    assert Path(f'{path}.data').exists() is bool(dynamo)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(session.run(None, {'input': x.numpy()})[0] - ref).max() <= 1e-5


def test_bad_dynamo_value_is_a_clear_error(tmp_path):
    from rep_mm.deploy.errors import DeployError
    from rep_mm.deploy.exporter import exporter_choice
    from mmengine.config import Config
    assert exporter_choice(Config(dict(onnx_config=dict(opset_version=11)))) is False
    assert exporter_choice(Config(dict(onnx_config=dict(dynamo=True)))) is True
    with pytest.raises(DeployError, match='must be True .* or False'):
        exporter_choice(Config(dict(onnx_config=dict(dynamo='yes'))))


REGISTERED = """
import sys
{first}
{second}
from mmdeploy.core import FUNCTION_REWRITER
records = FUNCTION_REWRITER._registry._rewrite_records.get('torch.onnx.export', [])
from rep_mm.deploy.exporter import _export_with_configured_exporter as rewriter
print(sum(r['_object'] is rewriter for r in records))
"""


@pytest.mark.parametrize('order', ['rep_mm first', 'mmdeploy first'])
def test_rewriter_registered_in_either_import_order(order):
    """`import rep_mm` (what a config's custom_imports does) registers the rewriter exactly
    once, whether mmdeploy is imported before or after it."""
    first, second = 'import rep_mm', 'import mmdeploy.apis'
    if order == 'mmdeploy first':
        first, second = second, first
    code = REGISTERED.format(first=first, second=second)
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300, env=dict(_env(), OMP_NUM_THREADS='1'))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == '1'


def _env():
    import os
    return dict(os.environ)


def test_import_rep_mm_does_not_import_mmdeploy():
    code = 'import sys, rep_mm; print("mmdeploy" in sys.modules)'
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300, env=dict(_env(), OMP_NUM_THREADS='1'))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == 'False'


def _check_dynamic(data, min_sizes=2):
    dynamic = data['dynamic']
    assert dynamic is not None and not dynamic['failures'], dynamic
    sizes = dynamic['sizes']
    assert len(sizes) >= min_sizes
    assert len({tuple(s['input_shape']) for s in sizes}) == len(sizes)
    for size in sizes:
        assert size['passed'] and size['comparable'] and size['max_rel'] <= 1e-4, size
    return sizes


def _check_sdk(data):
    check = data['sdk_check']
    assert check['ran'], check['note']
    assert check['passed'], check['failures']
    return check


def test_dynamic_classifier_and_sdk(tmp_path):
    report = export(CLS, str(tmp_path), random_init=True, quiet=True,
                    deploy_config=str(DEPLOY / 'classification_onnxruntime_dynamic.py'))
    data = report.to_dict()
    assert data['passed'], data['failures']
    sizes = _check_dynamic(data, min_sizes=3)
    assert [1, 3, 32, 32] in [s['input_shape'] for s in sizes]
    assert any(s['input_shape'][0] == 2 for s in sizes)  # batch 2
    assert any(s['input_shape'][2] != 32 for s in sizes)  # another H/W
    check = _check_sdk(data)
    assert check['sdk_label'] == check['torch_label'] and check['score_diff'] <= 1e-3

    # the SDK check is not vacuous: other weights give another score (or class)
    from mmengine.config import Config
    from mmengine.registry import MODELS
    from rep_mm.deploy.sdk_check import check_sdk
    from rep_mm.verify.bn_statistics import randomize_bn_statistics
    model_cfg = Config.fromfile(str(tmp_path / 'deploy_model.py'))
    deploy_cfg = Config.fromfile(str(tmp_path / 'deploy_cfg.py'))
    torch.manual_seed(5)
    other = randomize_bn_statistics(MODELS.build(model_cfg.model), 5).eval()
    from mmdeploy.apis import build_task_processor
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    input_data, inputs = processor.create_input(str(tmp_path / 'input.png'), None,
                                                data_preprocessor=other.data_preprocessor)
    wrong = check_sdk(tmp_path, 'mmpretrain', tmp_path / 'input.png', other, deploy_cfg,
                      model_cfg, inputs, input_data['data_samples'], against='other weights')
    assert wrong['ran'] and not wrong['passed'] and wrong['failures']


def test_dynamic_segmentor_batch(tmp_path):
    """PSPNet: batch dynamic (H/W are not: mmdeploy's adaptive-pool rewrite bakes the traced
    size into its kernel), checked at batch 1 and 2."""
    report = export(SEG, str(tmp_path), random_init=True, quiet=True, sdk_run=False,
                    deploy_config=str(DEPLOY / 'segmentation_onnxruntime_dynamic.py'))
    data = report.to_dict()
    assert data['passed'], data['failures']
    sizes = _check_dynamic(data)
    assert [s['input_shape'] for s in sizes] == [[1, 3, 192, 192], [2, 3, 192, 192]]
    assert sizes[1]['outputs'] == [[2, 11, 192, 192]]


def test_dynamic_hw_of_pspnet_is_caught(tmp_path):
    """A PSPNet graph exported with dynamic H/W runs at other sizes but is wrong there: the
    size check fails the export instead of passing a wrong graph."""
    deploy_cfg = tmp_path / 'seg_dynamic_hw.py'
    deploy_cfg.write_text(
        f"_base_ = ['{DEPLOY / 'segmentation_onnxruntime_static.py'}']\n"
        "onnx_config = dict(dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'},\n"
        "                                 'output': {0: 'batch', 2: 'height', 3: 'width'}})\n")
    report = export(SEG, str(tmp_path / 'work'), random_init=True, quiet=True, sdk_run=False,
                    deploy_config=str(deploy_cfg))
    data = report.to_dict()
    assert not data['passed']
    sizes = data['dynamic']['sizes']
    assert sizes[0]['passed'] and sizes[0]['max_rel'] <= 1e-4  # the traced size is right
    assert any(not s['passed'] and s['max_rel'] > 1e-2 for s in sizes[1:])
    assert any(f.startswith('dynamic ') for f in data['failures'])


def _swap_graph(work: Path, dst: Path, nodes, outputs, initializers) -> Path:
    """A copy of the work dir whose end2end.onnx is a small graph with known outputs (same
    input name and shape), so that what the SDK returns can be checked at every element."""
    import shutil
    from onnx import TensorProto, helper, numpy_helper
    shutil.copytree(work, dst)
    shape = [d.dim_value for d in onnx.load(str(work / 'end2end.onnx')).graph.input[0]
             .type.tensor_type.shape.dim]
    graph = helper.make_graph(
        nodes, 'known', [helper.make_tensor_value_info('input', TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(dst / 'end2end.onnx'))
    return dst


def _sdk_input(work: Path, size):
    """The network input as the SDK's pipeline makes it (OpenCV bilinear resize, then
    (x - mean) / std), HWC float32."""
    import json

    import cv2
    transforms = json.loads((work / 'pipeline.json').read_text())['pipeline']['tasks'][0][
        'transforms']
    norm = next(t for t in transforms if t['type'] == 'Normalize')
    image = cv2.resize(cv2.imread(str(work / 'input.png')), size[::-1],
                       interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return (image - np.float32(norm['mean'])) / np.float32(norm['std'])


def test_sdk_segmentor_parity(tmp_path):
    """with_argmax=False: the SDK's score map at the image size, argmax, vs mmseg's predict;
    then a graph with a known output at every pixel and class (the input itself and ramps)
    read back through the SDK element by element (mmdeploy_runtime 1.3.1 hands the score map
    out with stride 0, see rep_mm.deploy.sdk_check)."""
    from onnx import TensorProto, helper

    from rep_mm.deploy.sdk_check import SCORE_TOL, run_sdk
    report = export(SEG, str(tmp_path / 'work'), random_init=True, quiet=True)
    check = _check_sdk(report.to_dict())
    assert check['pixels'] == 64 * 64 and check['pixel_agreement'] >= 0.999, check
    assert not check['sdk_output']['spatially_constant']
    assert check['sdk_output']['shape'] == [11, 64, 64]
    assert check['score_map_max_abs'] <= SCORE_TOL, check

    import cv2
    h = w = 192
    c, y, x = np.ogrid[:8, :h, :w]
    ramp = np.where(c % 2 == 0, 100.0 * (c + 3) + y, 100.0 * (c + 3) + x).astype(np.float32)
    known = _swap_graph(tmp_path / 'work', tmp_path / 'known',
                        [helper.make_node('Concat', ['input', 'ramp'], ['output'], axis=1)],
                        [('output', TensorProto.FLOAT, [1, 11, h, w])], {'ramp': ramp[None]})
    full = np.concatenate([_sdk_input(known, (h, w)).transpose(2, 0, 1), ramp])
    expected = np.stack([cv2.resize(m, (64, 64), interpolation=cv2.INTER_LINEAR)
                         for m in full])
    result = run_sdk(known, 'mmseg', known / 'input.png')
    assert list(result['strides_repaired']) == ['seg']
    assert result['seg'].shape == (11, 64, 64)
    np.testing.assert_allclose(result['seg'], expected, rtol=1e-6, atol=1e-5)


def test_sdk_segmentor_argmax_parity(tmp_path):
    """with_argmax=True: the SDK's label map (nearest-resized by its ResizeMask) vs the graph's
    label map resized the same way, on every pixel; mmseg's predict is reported."""
    deploy_cfg = tmp_path / 'seg_argmax.py'
    deploy_cfg.write_text(f"_base_ = ['{DEPLOY / 'segmentation_onnxruntime_static.py'}']\n"
                          "codebase_config = dict(with_argmax=True)\n")
    report = export(SEG, str(tmp_path / 'work'), random_init=True, quiet=True,
                    deploy_config=str(deploy_cfg))
    check = _check_sdk(report.to_dict())
    assert check['sdk_output']['shape'] == [64, 64] and check['sdk_output']['with_argmax']
    assert check['pixels'] == 64 * 64 and check['pixel_agreement'] >= 0.999, check
    assert not check['sdk_output']['spatially_constant']
    assert 0.9 < check['mmseg_predict_agreement'] <= 1.0


def test_dynamic_detector(tmp_path):
    report = export(DET, str(tmp_path), random_init=True, quiet=True, sdk_run=False,
                    deploy_config=str(DEPLOY / 'detection_onnxruntime_dynamic.py'))
    data = report.to_dict()
    assert data['passed'], data['failures']
    sizes = _check_dynamic(data, min_sizes=3)
    assert any(s['input_shape'][0] == 2 for s in sizes)
    assert any(s['input_shape'][2] != 128 for s in sizes)


def test_sdk_detector_parity(tmp_path):
    """RetinaNet: every SDK box matched to the graph's (same label, IoU, score); then a graph
    with known dets / labels read back through the SDK (its C API: the binding's labels carry
    one value), including a box on the bottom edge that the SDK's ResizeBBox drops."""
    from onnx import TensorProto, helper

    from rep_mm.deploy.sdk_check import SCORE_TOL, run_sdk
    report = export(DET, str(tmp_path / 'work'), random_init=True, quiet=True)
    check = _check_sdk(report.to_dict())
    assert check['reference_boxes'] >= 1 and check['mismatched'] == 0, check
    assert check['matched'] == check['reference_boxes'] == check['sdk_boxes'], check
    assert check['max_score_diff'] <= SCORE_TOL

    # network pixels (128 x 128 input of a 64 x 64 image: scale factor 2)
    dets = np.array([[10, 20, 50, 60, 0.9], [0, 128, 128, 128, 0.8], [64, 4, 127, 40, 0.7],
                     [2, 70, 30, 126, 0.5], [40, 40, 90, 100, 0.3]], np.float32)
    labels = np.array([7, 1, 3, 9, 0], np.int64)
    known = _swap_graph(tmp_path / 'work', tmp_path / 'known',
                        [helper.make_node('Identity', ['dets_c'], ['dets']),
                         helper.make_node('Identity', ['labels_c'], ['labels'])],
                        [('dets', TensorProto.FLOAT, [1, 5, 5]),
                         ('labels', TensorProto.INT64, [1, 5])],
                        {'dets_c': dets[None], 'labels_c': labels[None]})
    result = run_sdk(known, 'mmdet', known / 'input.png')
    keep = [0, 2, 3, 4]  # box 1 lies on the bottom edge: y1 = 64 > y2 = 63 after mapping
    expected = dets[keep].copy()
    expected[:, :4] /= 2
    expected[:, 2:4] = np.minimum(expected[:, 2:4], 63)
    np.testing.assert_array_equal(result['labels'], labels[keep])
    np.testing.assert_allclose(result['boxes'], expected, rtol=0, atol=1e-6)
    # the comparison maps the graph's boxes as the SDK does (the same boxes kept and dropped)
    from mmdet.structures import DetDataSample

    from rep_mm.deploy.sdk_check import _scale_back
    mapped, kept = _scale_back(dets, DetDataSample(metainfo=dict(scale_factor=(2.0, 2.0),
                                                                 ori_shape=(64, 64))))
    assert kept.tolist() == [True, False, True, True, True]
    np.testing.assert_allclose(mapped[kept], result['boxes'], rtol=0, atol=1e-6)


def test_match_detections_rejects_shifted_or_relabelled_boxes():
    boxes = np.array([[4, 4, 20, 24, 0.9], [30, 30, 50, 52, 0.6], [10, 40, 20, 60, 0.3]])
    labels = np.array([1, 3, 3])
    same = match_detections(boxes, labels, boxes[::-1].copy(), labels[::-1].copy(), [0.05])
    assert same['passed'] and same['matched'] == 3 and same['min_iou'] == 1.0
    shifted = boxes.copy()
    shifted[1, :4] += 2.0  # 2 px: IoU ~0.7
    assert not match_detections(boxes, labels, shifted, labels, [0.05])['passed']
    assert not match_detections(boxes, labels, boxes, np.array([1, 3, 4]), [0.05])['passed']
    # a box within the score tolerance of the threshold may be kept on one side only
    near = np.vstack([boxes, [[60, 2, 70, 12, 0.0505]]])
    result = match_detections(boxes, labels, near, np.append(labels, 2), [0.05])
    assert result['passed'] and result['unmatched_near_threshold'] == 1
