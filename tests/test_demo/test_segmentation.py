"""The segmentation demo in quick mode: real Runner runs, identical metrics after conversion."""
import math
import os

import pytest
from PIL import Image

from rep_mm.demo.plots import SCENES_FIGURE_PIXELS
from rep_mm.demo.segmentation import format_seg_table, run_segmentation_demo


@pytest.mark.slow
def test_quick_segmentation_demo(tmp_path, capfd):
    summary = run_segmentation_demo(str(tmp_path), quick=True)
    out, err = capfd.readouterr()
    assert out == ''  # no Runner prints; progress goes to stderr as a few plain lines
    assert err.splitlines()[0] == '[seg] prepare the digit scenes' and len(err.splitlines()) <= 10
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
    assert f"{summary['miou']['train']:.2f} mIoU" in table and '0 blocks left unconverted' in table
    assert f"{summary['same_pixels']:,} / {summary['pixels']:,}" in table
    # the picture: input, ground truth and both masks of a few scenes, at its fixed size
    with Image.open(summary['figure']) as image:
        assert image.format == 'PNG' and image.size == SCENES_FIGURE_PIXELS
        image.load()
    # the mm logs are files in the work dir: the part's own, then one per Runner
    part_log, train_log, *test_logs = summary['log_files']
    assert part_log == str(tmp_path / 'seg.log') and len(test_logs) == 2
    assert all(os.path.dirname(os.path.dirname(log)) == str(tmp_path / name) for log, name in
               zip([train_log] + test_logs, ['seg_train', 'seg_test_train', 'seg_test_deploy']))
    assert 'Iter(train)' in open(train_log).read()
