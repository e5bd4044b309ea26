"""The toolboxes' own scripts and APIs on rep_mm configs and the checkpoints they write.

Each test runs what an OpenMMLab user runs, none of it written by rep_mm: mmpretrain's, mmseg's
and mmdet's own ``.mim/tools/train.py`` / ``test.py`` (subprocesses started in an empty folder,
so the configs' relative ``data/...`` defaults do not exist there: the data moves with the one
override ``--cfg-options data_root=DIR``), mmengine's ``Runner(load_from=...)``,
``mmpretrain.get_model`` / ``ImageClassificationInferencer``, ``mmseg.apis.init_model`` +
``inference_model``, ``mmdet.apis.init_detector`` + ``inference_detector`` and
``mmdeploy.apis.torch2onnx``. ``torch.load`` keeps its ``weights_only=True`` default and
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is removed from the environment: the checkpoints load
because importing rep_mm (the configs' ``custom_imports``) allow-lists exactly the globals a
Runner checkpoint holds.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rep_mm
from rep_mm.datasets import prepare_digit_scenes

REPO = Path(__file__).resolve().parents[2]
CLS_CONFIG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
SEG_CONFIG = REPO / 'configs' / 'pspnet' / 'pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py'
DET_CONFIG = REPO / 'configs' / 'retinanet' / 'retinanet_repvgg-tiny_fpn_1xb8-2k_digit-scenes-128x128.py'
CLS_DEPLOY = REPO / 'configs' / 'deploy' / 'classification_onnxruntime_static.py'
SMALL_CLS = ['train_dataloader.dataset.indices=64', 'val_dataloader.dataset.indices=64',
             'test_dataloader.dataset.indices=64', 'default_hooks.logger.interval=1']
SMALL_SCENES = ['train_dataloader.batch_size=4', 'val_dataloader.batch_size=4',
                'test_dataloader.batch_size=4', 'default_hooks.logger.interval=1']


def toolbox_tool(package: str, name: str) -> Path:
    """``<package>/.mim/tools/<name>``: the script a toolbox installs for ``mim`` and users."""
    module = __import__(package)
    path = Path(module.__file__).parent / '.mim' / 'tools' / name
    assert path.is_file(), f'{package} ships no {path}'
    return path


def user_environment() -> dict:
    """The environment of a user who set nothing: no weights_only override, one thread."""
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env['OMP_NUM_THREADS'] = '1'
    return env


def run_tool(script: Path, args, cwd: Path) -> str:
    """Run a toolbox script like a user (in ``cwd``); returns stdout + stderr, asserts exit 0."""
    result = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd,
                            env=user_environment(), capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f'{script.name} {args} failed:\n{log[-4000:]}'
    return log


def logged_metric(log: str, name: str) -> float:
    """The last value of ``name: value`` in an mmengine log."""
    values = re.findall(rf'{re.escape(name)}: (-?[0-9.]+)', log)
    assert values, f'{name} not in the log:\n{log[-2000:]}'
    return float(values[-1])


@pytest.fixture(scope='module')
def scenes(tmp_path_factory) -> str:
    return prepare_digit_scenes(tmp_path_factory.mktemp('data') / 'scenes', num_train=24,
                                num_val=8, size=64, seed=0)['root']


@pytest.fixture(scope='module')
def elsewhere(tmp_path_factory) -> Path:
    """An empty folder to start the scripts in: no ``data/`` below it."""
    return tmp_path_factory.mktemp('user')


@pytest.fixture(scope='module')
def cls_run(tmp_path_factory, data_root, elsewhere):
    work = tmp_path_factory.mktemp('cls')
    log = run_tool(toolbox_tool('mmpretrain', 'train.py'),
                   [CLS_CONFIG, '--work-dir', work, '--cfg-options', f'data_root={data_root}',
                    'train_cfg.max_epochs=1', *SMALL_CLS], elsewhere)
    return work, log


@pytest.fixture(scope='module')
def seg_run(tmp_path_factory, scenes, elsewhere):
    work = tmp_path_factory.mktemp('seg')
    log = run_tool(toolbox_tool('mmseg', 'train.py'),
                   [SEG_CONFIG, '--work-dir', work, '--cfg-options', f'data_root={scenes}',
                    'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                    'default_hooks.checkpoint.interval=2', *SMALL_SCENES], elsewhere)
    return work, log


@pytest.fixture(scope='module')
def det_run(tmp_path_factory, scenes, elsewhere):
    work = tmp_path_factory.mktemp('det')
    log = run_tool(toolbox_tool('mmdet', 'train.py'),
                   [DET_CONFIG, '--work-dir', work, '--cfg-options', f'data_root={scenes}',
                    'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                    'default_hooks.checkpoint.interval=2', 'model.test_cfg.score_thr=0.0',
                    *SMALL_SCENES], elsewhere)
    return work, log


def test_runner_checkpoint_globals_are_allow_listed_on_import():
    """What importing rep_mm adds: exactly the Runner-checkpoint entries, nothing else."""
    from rep_mm.io import runner_safe_globals
    from rep_mm.integrations.runner_checkpoints import registered_runner_globals
    assert registered_runner_globals() == runner_safe_globals()
    # torch adds its own entries when torch.distributed loads: import the stack first
    code = ('import torch, mmengine.runner, mmpretrain.models, mmseg.models, mmdet.models; '
            'before = set(map(str, torch.serialization.get_safe_globals())); '
            'import rep_mm; from rep_mm.io import runner_safe_globals; '
            'added = set(map(str, torch.serialization.get_safe_globals())) - before; '
            'print(len(added), len(runner_safe_globals()))')
    result = subprocess.run([sys.executable, '-c', code], env=user_environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    added, expected = map(int, result.stdout.split())
    assert added == expected > 0


# ------------------------------------------------------------------------------- mmpretrain
def test_mmpretrain_train_script_moves_the_data_and_writes_a_loadable_checkpoint(cls_run):
    work, log = cls_run
    assert 'Epoch(train) [1][2/2]' in log
    checkpoint = torch.load(work / 'epoch_1.pth', map_location='cpu')  # weights_only default
    assert checkpoint['meta']['epoch'] == 1 and 'message_hub' in checkpoint
    assert any('rbr_dense' in key for key in checkpoint['state_dict'])


def test_mmpretrain_test_script_converts_and_evaluates(cls_run, data_root, elsewhere):
    work, _ = cls_run
    log = run_tool(toolbox_tool('mmpretrain', 'test.py'),
                   [CLS_CONFIG, work / 'epoch_1.pth', '--work-dir', work / 'test',
                    '--cfg-options', f'data_root={data_root}', *SMALL_CLS], elsewhere)
    top1 = logged_metric(log, 'accuracy/top1')
    assert 0.0 <= top1 <= 100.0
    assert 'ReparameterizeHook' in log and 'PASS' in log  # converted before testing, verified


def test_mmpretrain_train_script_resumes(cls_run, data_root, elsewhere):
    work, _ = cls_run
    log = run_tool(toolbox_tool('mmpretrain', 'train.py'),
                   [CLS_CONFIG, '--work-dir', work / 'resumed', '--resume', work / 'epoch_1.pth',
                    '--cfg-options', f'data_root={data_root}', 'train_cfg.max_epochs=2',
                    *SMALL_CLS], elsewhere)
    assert 'resumed epoch: 1' in log and 'Epoch(train) [2][2/2]' in log
    assert torch.load(work / 'resumed' / 'epoch_2.pth', map_location='cpu')['meta']['epoch'] == 2


def test_a_fresh_runner_loads_the_checkpoint(cls_run, data_root):
    from mmengine.config import Config
    from mmengine.runner import Runner
    work, _ = cls_run
    cfg = Config.fromfile(str(CLS_CONFIG))
    cfg.merge_from_dict(dict(data_root=data_root, work_dir=str(work / 'runner'),
                             load_from=str(work / 'epoch_1.pth')))
    cfg.merge_from_dict({k: int(v) if v.isdigit() else v
                         for k, v in (item.split('=') for item in SMALL_CLS)})
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert runner.test_loop.dataloader.dataset.data_root == data_root
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    assert runner.model.backbone.deploy  # the hook converted it before testing


def digit_image(data_root: str) -> Path:
    return sorted(Path(data_root, 'test').rglob('*.png'))[0]


def test_get_model_and_the_inferencer_load_the_checkpoint(cls_run, data_root):
    from mmpretrain import ImageClassificationInferencer, get_model
    work, _ = cls_run
    checkpoint = work / 'epoch_1.pth'
    model = get_model(str(CLS_CONFIG), pretrained=str(checkpoint), device='cpu')
    saved = torch.load(checkpoint, map_location='cpu')['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    image = digit_image(data_root)
    inferencer = ImageClassificationInferencer(str(CLS_CONFIG), pretrained=str(checkpoint),
                                               device='cpu')
    result = inferencer(str(image))[0]
    scores = np.asarray(result['pred_scores'])
    assert scores.shape == (10,) and abs(scores.sum() - 1) < 1e-5
    assert result['pred_label'] == int(scores.argmax())
    # the same image through the model get_model built, by hand
    import mmcv
    pixels = torch.from_numpy(mmcv.imread(str(image))).permute(2, 0, 1)
    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(dict(inputs=[pixels]), False)
        logits = model(batch['inputs'], mode='tensor')
    np.testing.assert_allclose(logits.softmax(-1)[0].numpy(), scores, rtol=0, atol=1e-6)
    # converted with rep_mm, the inference API gives the same answer
    rep_mm.reparameterize(inferencer.model)
    converted = np.asarray(inferencer(str(image))[0]['pred_scores'])
    np.testing.assert_allclose(converted, scores, rtol=0, atol=1e-5)


def test_mmdeploy_torch2onnx_loads_the_checkpoint(cls_run, data_root, tmp_path):
    import onnxruntime as ort
    from mmdeploy.apis import torch2onnx
    from mmpretrain import get_model
    work, _ = cls_run
    checkpoint = str(work / 'epoch_1.pth')
    image = str(digit_image(data_root))
    torch2onnx(image, str(tmp_path), 'end2end.onnx', str(CLS_DEPLOY), str(CLS_CONFIG),
               model_checkpoint=checkpoint, device='cpu')
    session = ort.InferenceSession(str(tmp_path / 'end2end.onnx'),
                                   providers=['CPUExecutionProvider'])
    import mmcv
    model = get_model(str(CLS_CONFIG), pretrained=checkpoint, device='cpu').eval()
    pixels = torch.from_numpy(mmcv.imread(image)).permute(2, 0, 1)
    with torch.no_grad():
        inputs = model.data_preprocessor(dict(inputs=[pixels]), False)['inputs']
        expected = model(inputs, mode='tensor').softmax(-1).numpy()
    onnx_scores = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    np.testing.assert_allclose(onnx_scores, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------- mmseg
def scene_image(scenes: str) -> Path:
    return sorted(Path(scenes, 'images', 'val').glob('*.png'))[0]


def test_mmseg_train_and_test_scripts(seg_run, scenes, elsewhere):
    work, log = seg_run
    assert 'Iter(train) [2/2]' in log
    log = run_tool(toolbox_tool('mmseg', 'test.py'),
                   [SEG_CONFIG, work / 'iter_2.pth', '--work-dir', work / 'test',
                    '--cfg-options', f'data_root={scenes}', *SMALL_SCENES], elsewhere)
    assert 0.0 <= logged_metric(log, 'mIoU') <= 100.0
    assert 'ReparameterizeHook' in log and 'PASS' in log


def test_mmseg_init_model_and_inference_model(seg_run, scenes):
    from mmseg.apis import inference_model, init_model
    work, _ = seg_run
    model = init_model(str(SEG_CONFIG), str(work / 'iter_2.pth'), device='cpu')
    image = str(scene_image(scenes))
    result = inference_model(model, image)
    mask = result.pred_sem_seg.data[0]
    assert tuple(mask.shape) == (64, 64) and int(mask.max()) <= 10
    rep_mm.reparameterize(model)
    converted = inference_model(model, image)
    logits, logits_converted = result.seg_logits.data, converted.seg_logits.data
    assert ((logits - logits_converted).abs().max() / logits.abs().max()).item() <= 1e-5
    assert (converted.pred_sem_seg.data[0] == mask).float().mean().item() >= 0.999


# ----------------------------------------------------------------------------------- mmdet
def test_mmdet_train_and_test_scripts(det_run, scenes, elsewhere):
    work, log = det_run
    assert 'Iter(train) [2/2]' in log
    log = run_tool(toolbox_tool('mmdet', 'test.py'),
                   [DET_CONFIG, work / 'iter_2.pth', '--work-dir', work / 'test',
                    '--cfg-options', f'data_root={scenes}', 'model.test_cfg.score_thr=0.0',
                    *SMALL_SCENES], elsewhere)
    assert 0.0 <= logged_metric(log, 'coco/bbox_mAP') <= 1.0
    assert 'ReparameterizeHook' in log and 'PASS' in log


def test_mmdet_init_detector_and_inference_detector(det_run, scenes):
    from mmdet.apis import inference_detector, init_detector
    work, _ = det_run
    model = init_detector(str(DET_CONFIG), str(work / 'iter_2.pth'), device='cpu',
                          cfg_options={'model.test_cfg.score_thr': 0.0})
    image = str(scene_image(scenes))
    result = inference_detector(model, image).pred_instances
    assert len(result.bboxes) > 0 and result.bboxes.shape[1] == 4
    rep_mm.reparameterize(model)
    converted = inference_detector(model, image).pred_instances
    # the same boxes, scores and labels (top-k ties aside: compare the 10 best)
    k = min(10, len(result.scores))
    assert torch.equal(converted.labels[:k], result.labels[:k])
    torch.testing.assert_close(converted.scores[:k], result.scores[:k], rtol=0, atol=1e-5)
    torch.testing.assert_close(converted.bboxes[:k], result.bboxes[:k], rtol=0, atol=1e-3)
