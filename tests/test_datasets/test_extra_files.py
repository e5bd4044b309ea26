"""The reuse check covers every file a toolbox loader would pick up, not only ``*.png``.

mmpretrain's ``CustomDataset`` takes images by extension case-insensitively
(``filename.lower().endswith(IMG_EXTENSIONS)``), walks every sub-directory of a class folder
(mmengine's ``list_dir_or_file`` skips hidden FILES but not hidden directories) and makes every
directory under the split a class; mmseg lists ``images/<split>`` recursively by suffix. A file
the generator did not write must stop the reuse with a message that names it and says what to do.
"""
import shutil
from pathlib import Path

import pytest

from rep_mm.datasets import DigitScenesError, DigitsError, prepare_digit_scenes, prepare_digits
from rep_mm.datasets._tree import IMG_EXTENSIONS, loader_files
from rep_mm.datasets.digits import loader_count


@pytest.fixture(scope='module')
def digits_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('extra') / 'digits8'
    prepare_digits(root, size=8, seed=0)
    return root


@pytest.fixture
def digits_copy(digits_tree, tmp_path):
    copy = tmp_path / 'digits8'
    shutil.copytree(digits_tree, copy)
    return copy


def _some_png(root: Path) -> Path:
    return sorted((root / 'train' / '3').glob('*.png'))[0]


def test_mmpretrain_would_load_what_the_check_counts(digits_copy):
    from mmpretrain.datasets import CustomDataset
    shutil.copy(_some_png(digits_copy), digits_copy / 'train' / '3' / 'extra.PNG')
    dataset = CustomDataset(data_root=str(digits_copy), data_prefix='train', lazy_init=False)
    assert set(IMG_EXTENSIONS) >= set(dataset.extensions)  # the check covers the loader's
    assert len(dataset) == 1438 == loader_count(digits_copy, 'train')


@pytest.mark.parametrize('relative', ['train/3/extra.PNG', 'train/3/extra.jpg',
                                      'test/0/photo.JPEG', 'train/3/.ipynb_checkpoints/0001.png',
                                      'train/5/sub/1234.png', 'train/3/0001.Png'])
def test_an_extra_image_stops_the_reuse_and_says_what_to_do(digits_copy, relative):
    target = digits_copy / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_some_png(digits_copy), target)
    before = sorted(p.relative_to(digits_copy).as_posix() for p in digits_copy.rglob('*'))
    with pytest.raises(DigitsError, match=rf"1 image file\(s\) that mmpretrain's CustomDataset "
                                          rf"would load .*{relative}.*move them out of"):
        prepare_digits(digits_copy, size=8, seed=0)
    after = sorted(p.relative_to(digits_copy).as_posix() for p in digits_copy.rglob('*'))
    assert after == before  # nothing removed or written


def test_an_extra_class_folder_stops_the_reuse(digits_copy):
    (digits_copy / 'train' / '.ipynb_checkpoints').mkdir()
    with pytest.raises(DigitsError, match=r'train/\.ipynb_checkpoints/.*extra classes'):
        prepare_digits(digits_copy, size=8, seed=0)


def test_files_no_loader_reads_are_ignored(digits_copy):
    (digits_copy / 'train' / '3' / 'notes.txt').write_text('mine')
    (digits_copy / 'train' / '3' / '.DS_Store').write_bytes(b'\0')
    manifest = prepare_digits(digits_copy, size=8, seed=0)
    assert manifest['reused'] and manifest['counts']['train'] == 1437
    assert loader_count(digits_copy, 'train') == 1437


def test_loader_listing_matches_mmengine(digits_copy):
    from mmengine.fileio import list_dir_or_file
    (digits_copy / 'train' / '3' / '.hidden').mkdir()
    shutil.copy(_some_png(digits_copy), digits_copy / 'train' / '3' / '.hidden' / 'x.png')
    shutil.copy(_some_png(digits_copy), digits_copy / 'train' / '3' / '.y.png')
    expected = sorted(list_dir_or_file(str(digits_copy / 'train'), list_dir=False,
                                       list_file=True, recursive=True))
    assert loader_files(digits_copy / 'train') == expected
    assert '3/.hidden/x.png' in expected and '3/.y.png' not in expected


def test_scenes_extra_image_in_a_sub_directory_stops_the_reuse(tmp_path):
    root = tmp_path / 'scenes'
    prepare_digit_scenes(root, num_train=4, num_val=2, size=32, seed=0)
    (root / 'images' / 'train' / 'more').mkdir()
    shutil.copy(root / 'images' / 'train' / '00000.png', root / 'images' / 'train' / 'more' / 'a.png')
    with pytest.raises(DigitScenesError, match=r'mmseg.*images/train/more/a\.png.*another out_dir'):
        prepare_digit_scenes(root, num_train=4, num_val=2, size=32, seed=0)
    (root / 'images' / 'train' / 'more' / 'a.png').unlink()
    shutil.copy(root / 'annotations' / 'val' / '00001.png', root / 'annotations' / 'val' / 'X.PNG')
    with pytest.raises(DigitScenesError, match=r'annotations/val/X\.PNG'):
        prepare_digit_scenes(root, num_train=4, num_val=2, size=32, seed=0)
    (root / 'annotations' / 'val' / 'X.PNG').unlink()
    assert prepare_digit_scenes(root, num_train=4, num_val=2, size=32, seed=0)['reused']
