"""prepare_digits: the real scikit-learn digits as a CustomDataset tree, deterministic and atomic."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from rep_mm.datasets import DigitsError, prepare_digits
from rep_mm.datasets import digits as digits_module


def _tree(root: Path) -> dict:
    """``{relative path: bytes}`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def tree32(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits') / 'digits32'
    return root, prepare_digits(root, size=32, seed=0)


@pytest.fixture(scope='module')
def tree8(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits') / 'digits8'
    return root, prepare_digits(root, size=8, seed=0)


def test_split_sizes_and_stratification(tree32):
    root, manifest = tree32
    assert manifest['counts'] == {'train': 1437, 'test': 360}
    assert manifest['reused'] is False
    for split, total in (('train', 1437), ('test', 360)):
        per_class = [len(list((root / split / str(c)).glob('*.png'))) for c in range(10)]
        assert per_class == manifest['class_counts'][split]
        assert sum(per_class) == total
        # stratified: every class holds its share of the split to within one image
        share = np.bincount(digits_module._load()[1], minlength=10) * total / 1797
        assert np.abs(np.array(per_class) - share).max() <= 1.0
    train = {p.name for p in (root / 'train').rglob('*.png')}
    test = {p.name for p in (root / 'test').rglob('*.png')}
    assert not train & test and len(train | test) == 1797


def test_images_are_one_channel_upscaled_digits(tree32, tree8):
    from PIL import Image
    images, labels = digits_module._load()
    root8, _ = tree8
    for path in sorted((root8 / 'test').rglob('*.png'))[:50]:
        index, label = int(path.stem), int(path.parent.name)
        with Image.open(path) as picture:
            assert picture.mode == 'L' and picture.size == (8, 8)
            np.testing.assert_array_equal(np.asarray(picture), images[index])  # lossless
        assert labels[index] == label
    root32, _ = tree32
    with Image.open(root32 / 'train' / '0' / '0000.png') as picture:
        pixels = np.asarray(picture)
    assert picture.size == (32, 32) and picture.mode == 'L'
    assert pixels.max() > 200 and pixels.min() == 0  # ink and background survive the resize


def test_same_seed_gives_identical_bytes(tmp_path, tree8):
    root8, _ = tree8
    again = tmp_path / 'again'
    prepare_digits(again, size=8, seed=0)
    assert _tree(again) == _tree(root8)
    other = prepare_digits(tmp_path / 'other', size=8, seed=1)
    assert other['sha256']['test'] != json.loads((root8 / 'manifest.json').read_text())[
        'sha256']['test']
    assert other['counts'] == {'train': 1437, 'test': 360}


def test_reuse_verifies_and_keeps_files(tree8):
    root, first = tree8
    before = {p: p.stat().st_mtime_ns for p in root.rglob('*')}
    second = prepare_digits(root, size=8, seed=0)
    assert second['reused'] is True and second['sha256'] == first['sha256']
    assert {p: p.stat().st_mtime_ns for p in root.rglob('*')} == before


@pytest.mark.parametrize('kwargs, words', [
    (dict(size=16, seed=0), ['size: found 8, asked 16']),
    (dict(size=8, seed=3), ['seed: found 0, asked 3']),
])
def test_other_parameters_are_refused_not_overwritten(tree8, kwargs, words):
    root, _ = tree8
    before = _tree(root)
    with pytest.raises(DigitsError) as info:
        prepare_digits(root, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert _tree(root) == before


def test_modified_tree_and_foreign_directory_are_refused(tmp_path):
    root = tmp_path / 'd'
    prepare_digits(root, size=8, seed=0)
    victim = next((root / 'test').rglob('*.png'))
    victim.write_bytes(victim.read_bytes() + b'x')
    with pytest.raises(DigitsError, match='do not match its manifest.json'):
        prepare_digits(root, size=8, seed=0)
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(DigitsError, match='no readable manifest.json'):
        prepare_digits(foreign)
    assert (foreign / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('kwargs, message', [
    (dict(size=4), 'size must be an int in [8, 256]'),
    (dict(size='32'), "got '32'"),
    (dict(seed=-1), 'seed must be an int in [0, 2**32)'),
    (dict(test_size=5), 'test_size must be an int in [10, 1787]'),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(DigitsError) as info:
        prepare_digits(tmp_path / 'x', **kwargs)
    assert message in str(info.value)
    assert not (tmp_path / 'x').exists()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {'n': 0}
    encode = digits_module._encode_png

    def failing(image, size):
        calls['n'] += 1
        if calls['n'] == 500:
            raise OSError('disk full (simulated)')
        return encode(image, size)

    monkeypatch.setattr(digits_module, '_encode_png', failing)
    with pytest.raises(OSError, match='simulated'):
        prepare_digits(tmp_path / 'd', size=8)
    assert os.listdir(tmp_path) == []  # neither the target nor a temp directory


def test_empty_directory_is_filled(tmp_path):
    root = tmp_path / 'empty'
    root.mkdir()
    assert prepare_digits(root, size=8)['reused'] is False
    assert (root / 'manifest.json').is_file()
    assert sorted(os.listdir(tmp_path)) == ['empty']


def test_mmpretrain_custom_dataset_reads_the_tree(tree32):
    from mmengine.registry import init_default_scope
    from mmpretrain.datasets import CustomDataset
    init_default_scope('mmpretrain')  # the pipeline's type names are mmpretrain's
    root, _ = tree32
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    dataset = CustomDataset(data_root=str(root), data_prefix='test', pipeline=pipeline)
    assert len(dataset) == 360
    assert dataset.CLASSES == tuple(str(i) for i in range(10))
    labels = [dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))]
    assert np.bincount(labels, minlength=10).tolist() == \
        prepare_digits(root)['class_counts']['test']
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 32, 32)  # gray replicated to 3 channels
    assert (sample['inputs'][0] == sample['inputs'][2]).all()


def test_command_line(tmp_path, capsys):
    assert digits_module.main([str(tmp_path / 'cli'), '--size', '8']) == 0
    assert '1437 train / 360 test images of 8x8' in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        digits_module.main([str(tmp_path / 'cli'), '--size', '9'])
    assert info.value.code == 2
    assert 'size: found 8, asked 9' in capsys.readouterr().err
