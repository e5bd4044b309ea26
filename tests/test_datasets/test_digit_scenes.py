"""prepare_digit_scenes: deterministic, consistent, disjoint, atomic, idempotent digit scenes."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rep_mm.datasets import DigitScenesError, SCENE_CLASSES, prepare_digit_scenes
from rep_mm.datasets import digit_scenes

NUM_TRAIN, NUM_VAL, SIZE = 24, 12, 64


def tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp('scenes') / 'a'
    manifest = prepare_digit_scenes(root, NUM_TRAIN, NUM_VAL, SIZE, seed=3)
    return root, manifest


def test_layout_and_counts(scenes):
    root, manifest = scenes
    assert manifest['reused'] is False and manifest['root'] == str(root)
    for split, count in (('train', NUM_TRAIN), ('val', NUM_VAL)):
        images = sorted((root / 'images' / split).glob('*.png'))
        labels = sorted((root / 'annotations' / split).glob('*.png'))
        assert [p.name for p in images] == [f'{i:05d}.png' for i in range(count)]
        assert [p.name for p in labels] == [p.name for p in images]
        coco = json.loads((root / 'coco' / f'instances_{split}.json').read_text())
        assert len(coco['images']) == count
        assert [c['id'] for c in coco['categories']] == list(range(1, 11))
        assert [c['name'] for c in coco['categories']] == [str(d) for d in range(10)]
        assert manifest['splits'][split]['scenes'] == count
        assert manifest['splits'][split]['digits'] == len(coco['annotations'])
    assert SCENE_CLASSES == ('background',) + tuple(str(d) for d in range(10))
    # no temporary directory left behind (atomic rename)
    assert not list(root.parent.glob(".*.tmp"))


def test_masks_boxes_and_pixels_agree(scenes):
    """Each COCO box is the tight box of its digit's pixels in the label map, with its class."""
    root, manifest = scenes
    for split in ('train', 'val'):
        coco = json.loads((root / 'coco' / f'instances_{split}.json').read_text())
        counts = np.zeros(11, np.int64)
        by_image = {}
        for ann in coco['annotations']:
            by_image.setdefault(ann['image_id'], []).append(ann)
        for info in coco['images']:
            image = np.asarray(Image.open(root / 'images' / split / info['file_name']))
            label = np.asarray(Image.open(root / 'annotations' / split / info['file_name']))
            assert image.shape == label.shape == (SIZE, SIZE)
            assert image.dtype == label.dtype == np.uint8
            assert label.max() <= 10
            counts += np.bincount(label.ravel(), minlength=11)
            anns = by_image[info['id']]  # every scene has at least one digit
            assert 1 <= len(anns) <= 4
            covered = np.zeros_like(label, bool)
            for ann in anns:
                x, y, w, h = ann['bbox']
                inside = label[y:y + h, x:x + w] == ann['category_id']
                assert inside.sum() == ann['area'] > 0
                # tight box: every border row / column of the box holds a pixel of the digit
                assert inside[0].any() and inside[-1].any()
                assert inside[:, 0].any() and inside[:, -1].any()
                covered[y:y + h, x:x + w] |= inside
            # no labelled pixel outside the boxes; ink wherever there is a label
            assert (covered == (label > 0)).all()
            assert (image[label > 0] > 0).all()
        assert counts.tolist() == manifest['splits'][split]['pixel_counts']
        assert counts[0] > counts[1:].sum() > 0  # mostly background, some of every scene


def test_deterministic_byte_identical(scenes, tmp_path):
    root, manifest = scenes
    again = prepare_digit_scenes(tmp_path / 'b', NUM_TRAIN, NUM_VAL, SIZE, seed=3)
    assert tree_digest(root) == tree_digest(tmp_path / 'b')
    assert again['sha256'] == manifest['sha256']
    other = prepare_digit_scenes(tmp_path / 'c', NUM_TRAIN, NUM_VAL, SIZE, seed=4)
    assert other['sha256']['train'] != manifest['sha256']['train']


def test_val_digits_unseen_in_training():
    images, labels = digit_scenes._load_digits()
    pools = digit_scenes._digit_pools(labels, seed=0)
    assert not set(pools['train'].tolist()) & set(pools['val'].tolist())
    assert len(pools['train']) + len(pools['val']) == 1797
    assert len(pools['val']) == 450  # 25 %, stratified: every digit on both sides
    assert np.bincount(labels[pools['val']], minlength=10).min() >= 40
    # scenes of a split draw only from their pool: render with a pool of one digit image
    rng = np.random.default_rng(0)
    single = pools['val'][:1]
    _, label_map, objects = digit_scenes._render_scene(rng, images, labels, single, 64, 4)
    assert {o[0] for o in objects} == {int(labels[single[0]])}
    assert set(np.unique(label_map).tolist()) == {0, int(labels[single[0]]) + 1}


def test_idempotent_reuse_and_refusals(scenes, tmp_path):
    root, manifest = scenes
    before = tree_digest(root)
    reused = prepare_digit_scenes(root, NUM_TRAIN, NUM_VAL, SIZE, seed=3)
    assert reused['reused'] is True and reused['sha256'] == manifest['sha256']
    assert tree_digest(root) == before
    with pytest.raises(DigitScenesError, match=r'other parameters \(num_train: found 24, asked 25'):
        prepare_digit_scenes(root, NUM_TRAIN + 1, NUM_VAL, SIZE, seed=3)
    assert tree_digest(root) == before  # never overwritten

    copy = tmp_path / 'copy'
    prepare_digit_scenes(copy, 4, 2, 32, seed=0)
    (copy / 'annotations' / 'val' / '00001.png').write_bytes(b'changed')
    with pytest.raises(DigitScenesError, match="'val' files .* do not match"):
        prepare_digit_scenes(copy, 4, 2, 32, seed=0)

    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(DigitScenesError, match='no readable manifest.json'):
        prepare_digit_scenes(foreign, 4, 2, 32)
    assert (foreign / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), r'num_train must be an int in \[1, 100000\]'),
    (dict(num_val=2.5), r'num_val must be an int'),
    (dict(size=16), r'size must be an int in \[32, 512\] \(canvas side in pixels\), got 16'),
    (dict(seed=-1), r'seed must be an int in \[0, 4294967295\]'),
    (dict(max_digits=True), r'max_digits must be an int in \[1, 8\]'),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    args = dict(num_train=4, num_val=2, size=32, seed=0)
    args.update(kwargs)
    with pytest.raises(DigitScenesError, match=message):
        prepare_digit_scenes(tmp_path / 'x', **args)
    assert not (tmp_path / 'x').exists()


def test_command_line(tmp_path, capsys):
    assert digit_scenes.main([str(tmp_path / 'cli'), '--num-train', '3', '--num-val', '2',
                              '--size', '32', '--seed', '1']) == 0
    assert 'written' in capsys.readouterr().out
    assert digit_scenes.main([str(tmp_path / 'cli'), '--num-train', '3', '--num-val', '2',
                              '--size', '32', '--seed', '1']) == 0
    assert 'train 3 scenes' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        digit_scenes.main([str(tmp_path / 'cli'), '--num-train', '4', '--size', '32'])
    assert exit_info.value.code == 2
