"""One `data_root` override moves the data sets: rep_mm's loops and follow_data_root."""
from pathlib import Path

from mmengine.config import Config

from rep_mm.integrations import follow_data_root
from rep_mm.integrations.data_root import data_root_in_file

REPO = Path(__file__).resolve().parents[2]
CLS_CONFIG = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
DET_CONFIG = REPO / 'configs' / 'retinanet' / 'retinanet_repvgg-tiny_fpn_1xb8-2k_digit-scenes-128x128.py'


def test_an_overridden_data_root_moves_every_dataset_that_used_the_files_value():
    cfg = Config.fromfile(str(CLS_CONFIG))
    assert data_root_in_file(cfg) == 'data/digits'
    cfg.merge_from_dict(dict(data_root='/somewhere/digits'))
    changed = follow_data_root(cfg)
    assert sorted(changed) == ['test_dataloader.dataset.data_root',
                               'train_dataloader.dataset.data_root',
                               'val_dataloader.dataset.data_root']
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.data_root == '/somewhere/digits'
    assert follow_data_root(cfg) == []  # idempotent


def test_datasets_with_their_own_root_and_evaluator_files_are_handled():
    cfg = Config.fromfile(str(DET_CONFIG))
    cfg.val_dataloader.dataset.data_root = '/elsewhere'  # set explicitly by the user: kept
    cfg.test_evaluator = dict(type='CocoMetric', ann_file='data/digit_scenes/coco/val.json')
    cfg.merge_from_dict(dict(data_root='/new'))
    changed = follow_data_root(cfg)
    assert cfg.train_dataloader.dataset.data_root == '/new'
    assert cfg.val_dataloader.dataset.data_root == '/elsewhere'
    assert cfg.test_evaluator.ann_file == '/new/coco/val.json'
    assert 'test_evaluator.ann_file' in changed


def test_without_an_override_nothing_changes():
    cfg = Config.fromfile(str(CLS_CONFIG))
    assert follow_data_root(cfg) == []
    assert cfg.train_dataloader.dataset.data_root == 'data/digits'


def test_a_plain_runner_from_cfg_moves_the_data_through_the_configs_loops(data_root, tmp_path):
    """mmseg's test.py builds ``Runner.from_cfg`` directly: the loops must do it themselves."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(CLS_CONFIG))
    cfg.merge_from_dict(dict(data_root=data_root, work_dir=str(tmp_path)))
    assert cfg.train_dataloader.dataset.data_root == 'data/digits'  # what the override left
    runner = Runner.from_cfg(cfg)
    for loop in (runner.train_loop, runner.val_loop, runner.test_loop):
        assert loop.dataloader.dataset.data_root == data_root
        assert len(loop.dataloader.dataset) > 0
