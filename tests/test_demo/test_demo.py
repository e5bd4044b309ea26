"""The demo end to end with the real Runner: quick mode always, the full run as a slow test."""
import io
import json
import logging
import os
import warnings

import pytest
import torch
from PIL import Image

from rep_mm.demo import classification as demo, plots as demo_plots, run as demo_run
from rep_mm.io import load_checkpoint_file
from rep_mm.demo.progress import DemoPart, PartProgress
from rep_mm.demo.report import short_path
from rep_mm.demo.common import spread_indices

TOLERANCE = 1e-5
LINE_BUDGET = 60  # lines a successful run may print (stdout and stderr together)
RUNNER_CONSOLE_DUMPS = ('Config:', 'Environment', 'Hooks will be executed', 'Epoch(train)',
                        'Iter(train)', 'mmengine', 'Warning')


def _check_png(path, size) -> None:
    """``path`` is a PNG of ``size`` (width, height) pixels that decodes completely."""
    with Image.open(path) as image:
        assert image.format == 'PNG' and image.size == size
        image.load()


def _check_logs(summary: dict, work_dir, runners: int, train_marker: str) -> None:
    """The part's log and every Runner's log file lie in the work dir; the Runners' config
    dumps and training records went there (and so not to the console)."""
    part_log, *runner_logs = summary['log_files']
    assert len(runner_logs) == runners
    for path in summary['log_files']:
        assert os.path.isfile(path) and os.path.commonpath([path, str(work_dir)]) == str(work_dir)
    texts = [open(path).read() for path in runner_logs]
    assert all('Config:' in text for text in texts)
    assert train_marker in texts[0]
    assert all(path in open(part_log).read() for path in runner_logs)


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


def test_quick_demo(tmp_path, capfd):
    assert demo_run.main(['--work-dir', str(tmp_path), '--quick']) == 0
    out, err = capfd.readouterr()  # file descriptors: also what C code or subprocesses print
    lines = out.splitlines() + err.splitlines()
    assert len(lines) <= LINE_BUDGET, '\n'.join(lines)
    assert not [dump for dump in RUNNER_CONSOLE_DUMPS if dump in out + err]
    header = next(line for line in out.splitlines() if line.startswith('part '))
    assert header.split() == ['part', 'model', '/', 'measure', 'training-time', 'converted']
    assert '% top-1' in out and 'mIoU' in out and 'demo passed' in out
    summary = json.loads((tmp_path / demo.SUMMARY_NAME).read_text())
    assert summary['quick'] is True
    assert summary['train_images'] == demo.QUICK_TRAIN_IMAGES
    assert summary['test_images'] == demo.QUICK_TEST_IMAGES
    _check_summary(summary, tmp_path)
    # the segmentation part ran too, and its two evaluations agree
    seg = json.loads((tmp_path / 'summary_seg.json').read_text())
    assert seg['quick'] is True and seg['miou_identical'] is True and seg['ok'] is True
    assert 'PSPNet + RepVGG' in out
    repopt = json.loads((tmp_path / 'repopt_summary.json').read_text())
    assert repopt['quick'] is True and repopt['ok'] is True
    assert repopt['target_optimizer'] == 'RepOptSGD' and 'RepOpt-VGG target (RepOptSGD)' in out
    # the pictures the closing lines name, at their fixed sizes
    _check_png(summary['figure'], demo_plots.DIGITS_FIGURE_PIXELS)
    _check_png(seg['figure'], demo_plots.SCENES_FIGURE_PIXELS)
    assert short_path(summary['figure']) in out and short_path(seg['figure']) in out
    # the mm logs: in the work dir, one per Runner (train + 2 tests; 2 trainings for repopt)
    _check_logs(summary, tmp_path, 3, 'Epoch(train)')
    _check_logs(seg, tmp_path, 3, 'Iter(train)')
    _check_logs(repopt, tmp_path, 2, 'Epoch(train)')
    # every part states its wall time (in the table) and where its log is
    assert all(f"{key}.log" in out for key in ('cls', 'seg', 'repopt'))
    # the training checkpoint the hook let through is in training form
    train_state = load_checkpoint_file(summary['train_checkpoint'])['state_dict']
    assert any('rbr_dense' in k for k in train_state)
    assert not any('rbr_reparam' in k for k in train_state)


def test_quick_indices_cover_every_class():
    import numpy as np
    # the class-sorted folder tree of the default split: images per class, train and test
    for per_class, count in (([142, 146, 142, 146, 145, 145, 145, 143, 139, 144], 64),
                             ([36, 36, 35, 37, 36, 37, 36, 36, 35, 36], 128)):
        indices = spread_indices(sum(per_class), count)
        assert len(set(indices)) == count and max(indices) < sum(per_class)
        classes = np.searchsorted(np.cumsum(per_class), indices, side='right')
        assert np.bincount(classes, minlength=10).min() >= count // 10 - 1
    assert spread_indices(10, 64) == list(range(10))


def test_drawn_digits_show_every_mistake_and_every_class():
    labels = [i * 10 // 360 for i in range(360)]  # class-sorted, like the test split
    pred_train, pred_deploy = list(labels), list(labels)
    pred_train[100] = pred_deploy[100] = 9  # wrong in both forms
    pred_deploy[200] = 1  # the forms disagree
    shown = demo_plots.choose_digits(labels, pred_train, pred_deploy)
    assert len(shown) == demo_plots.DIGITS_SHOWN == len(set(shown)) and shown == sorted(shown)
    assert {100, 200} <= set(shown)
    assert {labels[i] for i in shown} == set(range(10))
    assert demo_plots.choose_digits([3, 5], [3, 5], [3, 5]) == [0, 1]


def test_missing_config_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='demo config .*nope.py not found'):
        demo.run_classification_demo(str(tmp_path), quick=True,
                                     config=tmp_path / 'nope.py')
    assert os.listdir(tmp_path) == []  # refused before writing anything


def test_unknown_part_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        demo_run.main(['--work-dir', str(tmp_path), '--parts', 'cls,detection'])
    assert error.value.code == 2
    assert "unknown part(s) ['detection']; allowed: cls, seg, repopt" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_failed_part_names_its_log(tmp_path, capfd):
    broken = tmp_path / 'broken.py'  # the demo config with a backbone no registry knows
    broken.write_text(f"_base_ = [{str(demo.DEFAULT_CONFIG)!r}]\n"
                      "model = dict(backbone=dict(type='rep_mm.NoSuchBackbone'))\n")
    work_dir = tmp_path / 'work'
    assert demo_run.main(['--work-dir', str(work_dir), '--quick', '--parts', 'cls',
                          '--config', str(broken)]) == 1
    out, err = capfd.readouterr()
    assert len(out.splitlines() + err.splitlines()) <= LINE_BUDGET
    failure = next(line for line in err.splitlines() if line.startswith('DEMO FAILED'))
    assert 'classification: KeyError' in failure and 'NoSuchBackbone' in failure
    assert str(work_dir / 'cls.log') in failure
    assert 'Traceback' in (work_dir / 'cls.log').read_text()
    assert not (work_dir / demo.SUMMARY_NAME).exists()


def test_part_sends_warnings_and_logs_to_its_file(tmp_path, capfd):
    from mmengine.logging import print_log
    showwarning, root_handlers = warnings.showwarning, list(logging.getLogger().handlers)
    with DemoPart('probe', str(tmp_path)) as part:
        warnings.warn('probe warning', UserWarning)
        logging.getLogger('some.library').warning('probe record')
        print_log('probe print_log', logger='current')
        part.phase('probe phase')
    out, err = capfd.readouterr()
    assert out == ''
    assert err.splitlines() == ['[probe] probe phase', f'[probe] done in {part.seconds:.0f} s']
    log = (tmp_path / 'probe.log').read_text()
    for message in ('probe warning', 'probe record', 'probe print_log', 'probe phase'):
        assert message in log
    # both restored on leaving the part
    assert warnings.showwarning is showwarning
    assert logging.getLogger().handlers == root_handlers


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_one_updating_line():
    stream = _Terminal()
    progress = PartProgress('cls', stream)
    progress.add_total(3)
    progress.phase('train')
    for _ in range(3):
        progress.advance()
    progress.close('done in 1 s')
    text = stream.getvalue()
    assert text.count('\n') == 1 and '\r' in text  # redrawn in place, one line left
    assert '3/3' in text.split('\r')[-1] and 'done in 1 s' in text.split('\r')[-1]


@pytest.mark.slow
def test_full_demo_reaches_target(tmp_path, capfd):
    assert demo_run.main(['--work-dir', str(tmp_path), '--parts', 'cls']) == 0
    out, err = capfd.readouterr()
    assert len(out.splitlines() + err.splitlines()) <= LINE_BUDGET
    assert not [dump for dump in RUNNER_CONSOLE_DUMPS if dump in out + err]
    assert not (tmp_path / 'summary_seg.json').exists()  # tests/test_demo/test_segmentation.py runs that part
    summary = json.loads((tmp_path / demo.SUMMARY_NAME).read_text())
    assert summary['test_images'] == 360 and summary['train_images'] == 1437
    assert summary['top1']['deploy'] >= demo.TARGET_TOP1
    _check_summary(summary, tmp_path)
    _check_png(summary['figure'], demo_plots.DIGITS_FIGURE_PIXELS)
    _check_logs(summary, tmp_path, 3, 'Epoch(train)')
