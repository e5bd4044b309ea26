"""The demo end to end with the real Runner: quick mode always, the full run as a slow test."""
import json
import os

import pytest
import torch

from rep_mm import demo
from rep_mm.checkpoint import load_checkpoint_file

TOLERANCE = 1e-5


def _check_summary(summary: dict, work_dir) -> None:
    """What every demo run must show, quick or full."""
    assert summary['ok'] is True
    assert summary['top1']['train'] == summary['top1']['deploy']
    assert summary['top1_identical'] is True
    assert summary['same_predictions'] == summary['test_images']
    assert summary['unconverted_blocks'] == 0
    assert summary['batchnorm_in_backbone'] == 0
    assert summary['converted_blocks'] == 7  # stem + 1 + 2 + 2 + 1 blocks of the digits arch
    assert summary['max_rel_logit_diff'] <= TOLERANCE
    assert summary['hook_check']['passed'] is True
    assert summary['hook_check']['max_rel_error'] <= TOLERANCE
    assert summary['reload_max_abs_diff'] == 0.0
    # the deploy form drops the 1x1 branches and the BN affine parameters
    assert 0 < summary['params']['deploy'] < summary['params']['train']
    assert summary['images_per_second']['train'] > 0
    assert summary['images_per_second']['deploy'] > 0
    checkpoint = torch.load(summary['checkpoint'], map_location='cpu', weights_only=True)
    keys = list(checkpoint['state_dict'])
    assert any('rbr_reparam' in k for k in keys)
    assert not any('rbr_dense' in k or 'rbr_1x1' in k or 'rbr_identity' in k for k in keys)
    assert checkpoint['meta']['deploy'] is True
    written = json.loads((work_dir / demo.SUMMARY_NAME).read_text())
    assert written['top1'] == summary['top1']
    assert not [f for f in os.listdir(work_dir) if f.endswith('.tmp')]


def test_quick_demo(tmp_path, capsys):
    assert demo.main(['--work-dir', str(tmp_path), '--quick']) == 0
    out = capsys.readouterr().out
    assert 'top-1 accuracy (%)' in out and 'training-time' in out and 'converted' in out
    summary = json.loads((tmp_path / demo.SUMMARY_NAME).read_text())
    assert summary['quick'] is True
    assert summary['train_images'] == demo.QUICK_TRAIN_IMAGES
    assert summary['test_images'] == demo.QUICK_TEST_IMAGES
    _check_summary(summary, tmp_path)
    # the segmentation part ran too, and its two evaluations agree
    seg = json.loads((tmp_path / 'summary_seg.json').read_text())
    assert seg['quick'] is True and seg['miou_identical'] is True and seg['ok'] is True
    assert 'PSPNet-RepVGG' in out
    repopt = json.loads((tmp_path / 'repopt_summary.json').read_text())
    assert repopt['quick'] is True and repopt['ok'] is True
    assert repopt['target_optimizer'] == 'RepOptSGD' and 'RepOpt-VGG (target' in out
    # the training checkpoint the hook let through is in training form
    train_state = load_checkpoint_file(summary['train_checkpoint'])['state_dict']
    assert any('rbr_dense' in k for k in train_state)
    assert not any('rbr_reparam' in k for k in train_state)


def test_quick_indices_cover_every_class():
    import numpy as np
    # the class-sorted folder tree of the default split: images per class, train and test
    for per_class, count in (([142, 146, 142, 146, 145, 145, 145, 143, 139, 144], 64),
                             ([36, 36, 35, 37, 36, 37, 36, 36, 35, 36], 128)):
        indices = demo._spread(sum(per_class), count)
        assert len(set(indices)) == count and max(indices) < sum(per_class)
        classes = np.searchsorted(np.cumsum(per_class), indices, side='right')
        assert np.bincount(classes, minlength=10).min() >= count // 10 - 1
    assert demo._spread(10, 64) == list(range(10))


def test_missing_config_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='demo config .*nope.py not found'):
        demo.run_classification_demo(str(tmp_path), quick=True,
                                     config=tmp_path / 'nope.py')
    assert os.listdir(tmp_path) == []  # refused before writing anything


def test_unknown_part_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        demo.main(['--work-dir', str(tmp_path), '--parts', 'cls,detection'])
    assert error.value.code == 2
    assert "unknown part(s) ['detection']; allowed: cls, seg, repopt" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_full_demo_reaches_target(tmp_path):
    assert demo.main(['--work-dir', str(tmp_path), '--parts', 'cls']) == 0
    assert not (tmp_path / 'summary_seg.json').exists()  # tests/test_demo_seg.py runs that part
    summary = json.loads((tmp_path / demo.SUMMARY_NAME).read_text())
    assert summary['test_images'] == 360 and summary['train_images'] == 1437
    assert summary['top1']['deploy'] >= demo.TARGET_TOP1
    _check_summary(summary, tmp_path)
