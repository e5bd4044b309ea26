"""The segmentation demo in quick mode: real Runner runs, identical metrics after conversion."""
import math

import pytest

from rep_mm.demo_seg import format_seg_table, run_segmentation_demo


@pytest.mark.slow
def test_quick_segmentation_demo(tmp_path):
    summary = run_segmentation_demo(str(tmp_path), quick=True)
    assert summary['ok'] is True
    assert summary['iters'] == 4 and summary['train_scenes'] == 48 and summary['val_scenes'] == 16
    # two separate evaluations (training form / converted in place by the hook): identical
    assert summary['miou_identical'] and summary['metrics']['train'] == summary['metrics']['deploy']
    assert 0.0 <= summary['miou']['train'] <= 100.0 and math.isfinite(summary['miou']['train'])
    assert summary['pixels'] == 16 * 64 * 64
    # every pixel whose class is decided by more than the rounding of the logits keeps it; a
    # barely trained model has near-tied pixels that float32 rounding may flip either way
    assert summary['differing_decided_pixels'] == 0
    assert summary['same_pixels'] >= summary['pixels'] - summary['tied_pixels']
    assert summary['tied_pixels'] <= summary['pixels'] // 1000
    assert summary['max_rel_logit_diff'] <= 1e-5
    assert summary['hook_check']['phase'] == 'test' and summary['hook_check']['passed']
    assert summary['converted_blocks'] == 7 and summary['unconverted_blocks'] == 0
    assert summary['batchnorm_in_backbone'] == 0
    assert summary['params']['deploy'] < summary['params']['train']
    assert summary['images_per_second']['train'] > 0 and summary['images_per_second']['deploy'] > 0
    assert (tmp_path / 'seg_train' / 'iter_4.pth').is_file()
    table = format_seg_table(summary)
    assert 'mIoU (%)' in table and 'left unconverted 0' in table
