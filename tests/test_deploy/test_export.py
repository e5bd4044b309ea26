"""rep-mm export: mmdeploy torch2onnx + onnxruntime parity for a classifier, a segmentor and a
detector (small inputs, random weights with randomised BN statistics), graph checks, the work
dir a user hands on, and the exit codes of the command."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdeploy')
ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

from rep_mm.cli.dispatch import main as cli_main  # noqa: E402
from rep_mm.deploy import export  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLS = str(ROOT / 'configs/repvgg/repvgg-tiny_1xb32_digits.py')
SEG = str(ROOT / 'configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py')
DET = str(ROOT / 'configs/retinanet/retinanet_repvgg-tiny_fpn_1xb8-2k_digit-scenes-128x128.py')
TINY_BLOCKS = 7  # the tiny arch: stem + [1, 2, 2, 1] RepVGG blocks
SDK_FILES = ('deploy.json', 'pipeline.json', 'detail.json')


def _check_common(report, work: Path, task: str):
    data = report.to_dict()
    assert data['task'] == task and data['passed'], data['failures']
    assert data['exporter'] == 'torchscript' and data['opset'] == 11
    end_to_end = data['comparisons']['onnx_vs_training_form']
    assert end_to_end['comparable'] and end_to_end['max_rel'] <= 1e-4
    assert data['comparisons']['onnx_vs_converted']['max_rel'] <= 1e-4
    # conversion alone keeps the outputs to float32 rounding
    assert data['comparisons']['converted_vs_training_form']['max_rel'] <= 1e-5
    graph = data['graph']
    assert graph['batch_norm_nodes'] == 0
    assert graph['scopes_named']
    assert graph['fused_blocks'] == graph['blocks_with_one_conv'] == TINY_BLOCKS
    assert graph['conv_nodes_in_fused_blocks'] == TINY_BLOCKS
    assert graph['conv_nodes'] >= TINY_BLOCKS
    assert data['blocks'] == dict(converted=TINY_BLOCKS, already_deployed=0)
    for name in ('converted.pth', 'deploy_model.py', 'deploy_cfg.py', 'end2end.onnx',
                 'input.png', 'report.json') + SDK_FILES:
        assert (work / name).is_file(), name
    assert data['sdk']['written']
    on_disk = json.loads((work / 'report.json').read_text())
    assert on_disk['passed'] and on_disk['graph']['batch_norm_nodes'] == 0
    assert on_disk['versions']['mmdeploy'] == '1.3.1'
    # nothing but the fused convs: no BN anywhere in the converted weights
    converted = torch.load(work / 'converted.pth', weights_only=True)
    state = converted['state_dict']
    assert not any('rbr_dense' in k or 'rbr_1x1' in k for k in state)
    assert converted['meta']['rep_mm_form'] == 'deploy'
    return data


def test_classifier_export_parity(tmp_path):
    report = export(CLS, str(tmp_path), random_init=True, quiet=True)
    data = _check_common(report, tmp_path, 'classification')
    assert data['input_shape'] == [1, 3, 32, 32]
    # the work dir ran in the mmdeploy SDK: same class, same score as PyTorch
    sdk_check = data['sdk_check']
    assert sdk_check['ran'] and sdk_check['passed'], sdk_check
    assert sdk_check['sdk_label'] == sdk_check['torch_label']
    assert sdk_check['score_diff'] <= 1e-3
    assert data['outputs'] == {'output': [1, 10]}
    # independent check: the saved deploy model + converted.pth rebuild the exported model
    from mmengine.config import Config
    from mmengine.registry import MODELS
    from mmdeploy.apis import build_task_processor
    model_cfg = Config.fromfile(str(tmp_path / 'deploy_model.py'))
    assert 'rep_mm.deploy' in model_cfg.custom_imports['imports']  # registers the builder
    assert model_cfg.model.type == 'rep_mm.ReparameterizedModel'
    assert model_cfg.model.model_type == 'mmpretrain.ImageClassifier'
    deploy_cfg = Config.fromfile(str(tmp_path / 'deploy_cfg.py'))
    model = MODELS.build(model_cfg.model)
    state = torch.load(tmp_path / 'converted.pth', weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    model.eval()
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    _, inputs = processor.create_input(str(tmp_path / 'input.png'), [32, 32],
                                       data_preprocessor=model.data_preprocessor)
    with torch.no_grad():
        scores = torch.softmax(model(inputs, mode='tensor'), dim=1).numpy()
    session = ort.InferenceSession(str(tmp_path / 'end2end.onnx'),
                                   providers=['CPUExecutionProvider'])
    onnx_scores = session.run(None, {'input': inputs.numpy()})[0]
    assert np.abs(scores - onnx_scores).max() / np.abs(scores).max() <= 1e-4
    assert np.isclose(onnx_scores.sum(), 1.0, atol=1e-5)


def test_segmentor_export_parity(tmp_path):
    # a user-given image (here a 96x96 digit scene): resized to the static 192x192 input
    from rep_mm.datasets import prepare_digit_scenes
    prepare_digit_scenes(tmp_path / 'scenes', num_train=1, num_val=1, size=96, seed=3)
    image = tmp_path / 'scenes' / 'images' / 'val' / '00000.png'
    work = tmp_path / 'work'
    # the SDK run of segmentors/detectors: tests/test_deploy/test_mmdeploy.py (mmdeploy_runtime
    # 1.3.1 returns a constant mask / other labels there); here the export and its meta
    report = export(SEG, str(work), random_init=True, image=str(image), quiet=True,
                    sdk_run=False)
    data = _check_common(report, work, 'segmentation')
    assert data['image']['source'] == str(image)
    assert (work / 'input.png').read_bytes() == image.read_bytes()
    # PSPNet at 192x192 (stride-32 map 6x6, divisible by the pool scales), logits out
    assert data['resize_added'] and data['input_shape'] == [1, 3, 192, 192]
    assert data['outputs'] == {'output': [1, 11, 192, 192]}
    pipeline = json.loads((work / 'pipeline.json').read_text())
    assert 'Resize' in json.dumps(pipeline)


def test_detector_export_parity(tmp_path):
    report = export(DET, str(tmp_path), random_init=True, quiet=True, sdk_run=False)
    data = _check_common(report, tmp_path, 'detection')
    assert data['input_shape'] == [1, 3, 128, 128]
    assert set(data['outputs']) == {'dets', 'labels'}
    sdk_meta = json.loads((tmp_path / 'deploy.json').read_text())
    assert sdk_meta['models'][0]['name'] == 'repretinanet'
    assert sdk_meta['models'][0]['net'] == 'end2end.onnx'
    assert data['outputs']['dets'][2] == 5
    # the raw head outputs (5 levels x class scores and box deltas) before NMS match too
    pre_nms = data['comparisons']['pre_nms']
    assert pre_nms['comparable'] and pre_nms['outputs'] == 10
    assert pre_nms['max_rel'] <= 1e-4 and pre_nms['against'] == 'training form'


def _training_checkpoint(path: Path) -> Path:
    """A training-form checkpoint of the tiny classifier (Runner layout, trained BN stats)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from rep_mm.verify.bn_statistics import randomize_bn_statistics
    cfg = Config.fromfile(CLS)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(1)
    model = randomize_bn_statistics(MODELS.build(cfg.model), 1)
    torch.save(dict(meta=dict(epoch=2), state_dict=model.state_dict()), path)
    return path


def test_cli_export_checkpoints_and_exit_codes(tmp_path, capsys):
    ckpt = _training_checkpoint(tmp_path / 'epoch_2.pth')
    before = ckpt.read_bytes()
    work = tmp_path / 'work'
    assert cli_main(['export', CLS, str(ckpt), '--work-dir', str(work), '--quiet']) == 0
    assert 'PASS' in capsys.readouterr().out
    report = json.loads((work / 'report.json').read_text())
    assert report['checkpoint_form'] == 'training' and report['checkpoint'] == str(ckpt)
    assert ckpt.read_bytes() == before  # the input is never touched

    # a converted checkpoint is accepted as input too (no training form to compare with)
    work2 = tmp_path / 'work2'
    assert cli_main(['export', CLS, str(work / 'converted.pth'), '--work-dir', str(work2),
                     '--quiet']) == 0
    report2 = json.loads((work2 / 'report.json').read_text())
    assert report2['checkpoint_form'] == 'deploy' and report2['checked'] == 'onnx_vs_converted'
    # same weights, same image -> the same scores as the first export
    assert report2['comparisons']['onnx_vs_converted']['max_rel'] <= 1e-4

    # an impossible tolerance fails with exit code 1 (the real error is ~1e-7)
    capsys.readouterr()
    assert cli_main(['export', CLS, str(ckpt), '--work-dir', str(work), '--overwrite',
                     '--tolerance', '1e-30', '--quiet', '--no-sdk']) == 1
    assert 'FAIL' in capsys.readouterr().out
    assert not json.loads((work / 'report.json').read_text())['passed']


def test_cli_export_bad_inputs(tmp_path, capsys):
    work = tmp_path / 'work'
    cases = [
        (['export', str(tmp_path / 'missing.py'), '--random-init', '--work-dir', str(work)],
         'does not exist'),
        (['export', CLS, '--work-dir', str(work)], '--random-init'),
        (['export', CLS, str(tmp_path / 'none.pth'), '--work-dir', str(work)],
         'does not exist'),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2
        assert message in capsys.readouterr().err
    # a checkpoint of another model fits neither form
    other = tmp_path / 'other.pth'
    torch.save(dict(state_dict={'fc.weight': torch.zeros(2, 2)}), other)
    assert cli_main(['export', CLS, str(other), '--work-dir', str(work), '--quiet']) == 2
    assert 'fits neither' in capsys.readouterr().err
    # an earlier export is never overwritten without --overwrite
    work.mkdir(exist_ok=True)
    (work / 'end2end.onnx').write_bytes(b'keep me')
    assert cli_main(['export', CLS, '--random-init', '--work-dir', str(work)]) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert (work / 'end2end.onnx').read_bytes() == b'keep me'


def test_graph_checks_catch_an_unconverted_model(tmp_path):
    """The per-block check is not vacuous: a training-form RepVGG exported as is fails it
    (the TorchScript exporter folds eval-mode BN itself, so 'no BatchNormalization' alone
    would pass); the same blocks converted pass."""
    import copy

    from rep_mm import reparameterize
    from rep_mm.backbones import RepVGG
    from rep_mm.deploy.graph import graph_checks
    from rep_mm.verify.bn_statistics import randomize_bn_statistics
    model = randomize_bn_statistics(
        RepVGG(dict(num_blocks=[1, 1, 1, 1], width_factor=[0.25] * 4)), 0).eval()
    blocks = [name for name, m in model.named_modules() if hasattr(m, 'rbr_dense')]
    converted = copy.deepcopy(model)
    reparameterize(converted)
    results = {}
    for form, net in (('training', model), ('deploy', converted)):
        path = tmp_path / f'{form}.onnx'
        torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=11)
        results[form] = graph_checks(path, blocks)
    assert len(blocks) == 5
    assert results['deploy']['passed'] and results['deploy']['failures'] == []
    training = results['training']
    assert not training['passed']
    assert training['failures'][0].startswith('5 fused block(s) fail the graph check')
