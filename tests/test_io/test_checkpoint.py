"""Tests of rep_mm.io: safe loading, wrappings, key maps, strict reports, atomic saving."""
import os
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

from rep_mm.backbones import RepVGG, RepVGGplus
from rep_mm.io import (CheckpointError, detect_kind, extract_state_dict, load_checkpoint_file,
                       load_weights, mmpretrain_to_official, save_checkpoint_atomic)
from rep_mm.verify.bn_statistics import randomize_bn_statistics
from tests.conftest import load_manifest, relative_error

TINY_ARCH = dict(num_blocks=(1, 2, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.5),
                 group_layer_map={2: 2})
TINY_SE_ARCH = dict(TINY_ARCH, se_position='pre', se_ratio=4)
WRAPPINGS = ('raw', 'state_dict', 'model', 'module')


def wrap(state_dict, wrapping):
    if wrapping == 'raw':
        return state_dict
    if wrapping == 'module':
        return OrderedDict(('module.' + k, v) for k, v in state_dict.items())
    return {wrapping: state_dict, 'meta': {'note': 'wrapped'}}


def tiny_repvgg(deploy=False, arch=TINY_ARCH, seed=0):
    torch.manual_seed(seed)
    model = RepVGG(arch=dict(arch), out_indices=(0, 1, 2, 3), deploy=deploy)
    return randomize_bn_statistics(model, seed=seed).eval()


# ------------------------------------------------------------------------- file loading
def make_runner_checkpoint(work_dir):
    """Train a two-parameter model for one epoch with the real Runner; return its checkpoint."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class TwoWeights(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, labels=None, mode='tensor'):
            out = self.linear(inputs).squeeze(-1)
            if mode == 'loss':
                return dict(loss=((out - labels) ** 2).mean())
            return out

    class Points(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            return dict(inputs=torch.full((2,), float(index)), labels=float(index % 2))

    runner = Runner(
        model=TwoWeights(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=Points(), batch_size=4,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0))
    runner.train()
    return work_dir / 'epoch_1.pth', runner.model.state_dict()


def test_runner_checkpoints_load_with_weights_only_once_rep_mm_is_imported(tmp_path):
    """Without rep_mm torch refuses a Runner checkpoint; importing rep_mm allow-lists exactly
    what it holds (so the toolboxes' own loaders work), and rep_mm's own load leaves the
    allow-list as it found it."""
    import subprocess
    import sys
    path, trained = make_runner_checkpoint(tmp_path)
    load = f'import torch; torch.load({str(path)!r}, weights_only=True); print("loaded")'
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    bare = subprocess.run([sys.executable, '-c', load], capture_output=True, text=True, env=env)
    assert bare.returncode != 0 and re.search('(?i)unsupported global|weights_only', bare.stderr)
    with_rep_mm = subprocess.run([sys.executable, '-c', 'import rep_mm; ' + load],
                                 capture_output=True, text=True, env=env)
    assert with_rep_mm.returncode == 0 and 'loaded' in with_rep_mm.stdout, with_rep_mm.stderr
    globals_before = set(torch.serialization.get_safe_globals())  # torch keeps a set
    checkpoint = load_checkpoint_file(path)
    assert 'message_hub' in checkpoint and 'log_scalars' in checkpoint['message_hub']
    assert checkpoint['meta']['epoch'] == 1
    state_dict = extract_state_dict(checkpoint)
    assert list(state_dict) == ['linear.weight', 'linear.bias']
    for key, value in trained.items():
        assert torch.equal(state_dict[key], value)
    assert set(torch.serialization.get_safe_globals()) == globals_before  # nothing leaked


class _GetattrOnHistoryBuffer:
    """Pickles as getattr(HistoryBuffer, 'update'): a lookup the allow-list must refuse."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, 'update')


class _UnknownClass:
    def __init__(self):
        self.value = 3


def test_getattr_outside_history_buffer_statistics_is_refused(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': _GetattrOnHistoryBuffer()}, path)
    with pytest.raises(CheckpointError, match='allow_unsafe=True') as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)
    from mmengine.logging import HistoryBuffer
    assert load_checkpoint_file(path, allow_unsafe=True)['meta'] is HistoryBuffer.update


def test_unknown_global_is_refused_with_its_name(tmp_path):
    path = tmp_path / 'object.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': _UnknownClass()}, path)
    with pytest.raises(CheckpointError, match='_UnknownClass') as info:
        load_checkpoint_file(path)
    assert 'allow_unsafe=True' in str(info.value)
    assert load_checkpoint_file(path, allow_unsafe=True)['meta'].value == 3


def test_missing_empty_directory_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint_file(tmp_path / 'nope.pth')
    with pytest.raises(CheckpointError, match='not a file'):
        load_checkpoint_file(tmp_path)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty'):
        load_checkpoint_file(empty)
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(64, 64)}, good)
    data = good.read_bytes()
    for name, content in (('truncated.pth', data[:len(data) // 2]),
                          ('tail_cut.pth', data[:-30]),
                          ('garbage.pth', b'not a checkpoint at all' * 10)):
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match='truncated or corrupted|corrupted') as info:
            load_checkpoint_file(bad)
        assert str(bad) in str(info.value)
    assert torch.equal(load_checkpoint_file(good)['w'], torch.load(good, weights_only=True)['w'])


# ---------------------------------------------------------------------- extract_state_dict
@pytest.mark.parametrize('wrapping', WRAPPINGS)
def test_extract_state_dict_unwraps_every_wrapping(wrapping):
    state_dict = OrderedDict(a=torch.ones(1), b=torch.zeros(2))
    extracted = extract_state_dict(wrap(state_dict, wrapping))
    assert list(extracted) == ['a', 'b']
    assert torch.equal(extracted['b'], torch.zeros(2))


def test_extract_state_dict_rejects_what_is_not_a_state_dict():
    with pytest.raises(CheckpointError, match='not a state dict.*epoch'):
        extract_state_dict({'state_dict': {'w': torch.ones(1), 'epoch': 3}})
    with pytest.raises(CheckpointError, match='empty state dict'):
        extract_state_dict({'state_dict': {}})
    with pytest.raises(CheckpointError, match='got list'):
        extract_state_dict([torch.ones(1)])


# ------------------------------------------------------------------------ official manifests
MANIFEST_MODELS = {
    'RepVGG-A0': lambda deploy: RepVGG('A0', deploy=deploy),
    'RepVGG-B1g2': lambda deploy: RepVGG('B1g2', deploy=deploy),
    'RepVGG-D2se': lambda deploy: RepVGG('D2se', deploy=deploy),
    'RepVGGplus-L2pse': lambda deploy: RepVGGplus('L2pse', deploy=deploy),
}
HEAD_PREFIXES = ('linear.', 'stage1_aux.', 'stage2_aux.', 'stage3_first_aux.')


def build_uninitialised(name, deploy):
    """The backbone with allocated but uninitialised tensors (the loader overwrites them)."""
    with torch.device('meta'):
        model = MANIFEST_MODELS[name](deploy)
    return model.to_empty(device='cpu')


@pytest.mark.parametrize('form', ['train', 'deploy'])
@pytest.mark.parametrize('name', sorted(MANIFEST_MODELS))
def test_official_manifest_loads_strictly_in_every_wrapping(tmp_path, name, form):
    manifest = load_manifest(f'{name}__{form}')
    model = build_uninitialised(name, deploy=form == 'deploy')
    small = name == 'RepVGG-A0'
    generator = torch.Generator().manual_seed(1)
    state_dict = OrderedDict()
    for index, (key, shape) in enumerate(manifest):
        if key.endswith('num_batches_tracked'):
            state_dict[key] = torch.tensor(index, dtype=torch.long)
        elif small:  # real values, checked after loading
            state_dict[key] = torch.randn(shape, generator=generator)
        else:  # one stored number per tensor keeps the files small; keys and shapes are real
            state_dict[key] = torch.full((1,), float(index)).expand(shape) if shape else \
                torch.tensor(float(index))
    head_keys = [k for k, _ in manifest if k.startswith(HEAD_PREFIXES)]
    assert head_keys and 'linear.weight' in head_keys
    for wrapping in WRAPPINGS:
        path = tmp_path / f'{wrapping}.pth'
        torch.save(wrap(state_dict, wrapping), path)
        report = load_weights(model, path, strict=True)
        assert report.kind == 'official' and report.target == 'backbone'
        assert report.ok and sorted(report.skipped) == sorted(head_keys)
        assert len(report.loaded) == len(manifest) - len(head_keys)
        loaded = model.state_dict()
        for key in ('stage0.rbr_reparam.weight' if form == 'deploy' else
                    'stage0.rbr_dense.conv.weight', report.loaded[-1]):
            assert torch.equal(loaded[key], state_dict[key].expand_as(loaded[key]))
        if small:
            assert all(torch.equal(loaded[k], state_dict[k]) for k in report.loaded)
        path.unlink()


def test_official_classifier_weights_go_to_an_mmpretrain_head():
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    classifier = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='rep_mm.RepVGG', arch='A0'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=1280)))
    generator = torch.Generator().manual_seed(2)
    state_dict = OrderedDict((k, torch.randn(s, generator=generator))
                             for k, s in load_manifest('RepVGG-A0__train'))
    report = load_weights(classifier, wrap(state_dict, 'module'), strict=True)
    assert report.target == 'model' and report.ok and not report.skipped
    assert torch.equal(classifier.head.fc.weight, state_dict['linear.weight'])
    assert torch.equal(classifier.backbone.stage4[0].rbr_1x1.bn.running_var,
                       state_dict['stage4.0.rbr_1x1.bn.running_var'])


class _AuxHeadModel(nn.Module):
    """Backbone + a head with the official RepVGGplus classifier names (for the key map)."""

    def __init__(self):
        super().__init__()
        self.backbone = RepVGG(dict(TINY_ARCH))
        self.head = nn.Module()
        self.head.linear = nn.Linear(64, 5)
        self.head.stage1_aux = nn.Sequential(nn.Conv2d(16, 8, 1), nn.Linear(8, 5))


def test_official_head_keys_map_to_head_linear_and_aux_when_the_head_has_them():
    source = _AuxHeadModel()
    official = OrderedDict((k[len('backbone.'):] if k.startswith('backbone.') else
                            k[len('head.'):], v) for k, v in source.state_dict().items())
    assert 'linear.weight' in official and 'stage1_aux.1.bias' in official
    assert detect_kind(official) == 'official'
    target = _AuxHeadModel()
    report = load_weights(target, official)
    assert report.ok and len(report.loaded) == len(official)
    assert torch.equal(target.head.linear.weight, source.head.linear.weight)
    assert torch.equal(target.head.stage1_aux[1].bias, source.head.stage1_aux[1].bias)


@pytest.mark.parametrize('form', ['train', 'deploy'])
def test_official_repvggplus_checkpoint_fills_the_rep_mm_head(form):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    deploy = form == 'deploy'
    with torch.device('meta'):  # 146M parameters: allocate below without initialising
        classifier = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='rep_mm.RepVGGplus', arch='L2pse', out_indices=(0, 1, 2, 4),
                          deploy=deploy),
            head=dict(type='rep_mm.RepVGGplusClsHead', num_classes=1000, deploy=deploy,
                      in_channels=(160, 320, 640, 2560))))
    classifier.to_empty(device='cpu')
    manifest = load_manifest(f'RepVGGplus-L2pse__{form}')
    state_dict = OrderedDict(
        (k, torch.tensor(i) if k.endswith('num_batches_tracked') else
         torch.full((1,), float(i)).expand(s) if s else torch.tensor(float(i)))
        for i, (k, s) in enumerate(manifest))
    report = load_weights(classifier, wrap(state_dict, 'module'))
    assert report.ok and len(report.loaded) == len(manifest) and not report.skipped
    head_keys = [k for k in report.loaded if k.startswith('head.')]
    assert sorted(head_keys) == sorted('head.' + k for k, _ in manifest
                                       if k.startswith(HEAD_PREFIXES))
    assert torch.equal(classifier.head.linear.bias, state_dict['linear.bias'])
    if not deploy:
        assert torch.equal(classifier.head.stage3_first_aux[3].weight,
                           state_dict['stage3_first_aux.3.weight'])


# ---------------------------------------------------------------------- mmpretrain key map
def test_mmpretrain_key_map_examples():
    assert mmpretrain_to_official('stem.branch_3x3.conv.weight') == 'stage0.rbr_dense.conv.weight'
    assert mmpretrain_to_official('stage_1.0.branch_norm.weight') == 'stage1.0.rbr_identity.weight'
    assert mmpretrain_to_official('stage_4.0.branch_1x1.norm.running_var') == \
        'stage4.0.rbr_1x1.bn.running_var'
    assert mmpretrain_to_official('stem.branch_reparam.weight') == 'stage0.rbr_reparam.weight'
    assert mmpretrain_to_official('stage_3.0.se_layer.conv1.conv.weight') == \
        'stage3.0.se.down.weight'
    assert mmpretrain_to_official('stage_3.0.se_layer.conv2.conv.bias') == 'stage3.0.se.up.bias'


def mmpretrain_classifier(arch, rep_mm_backbone=False, deploy=False):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    if rep_mm_backbone:
        backbone = dict(type='rep_mm.RepVGG', arch=dict(arch), deploy=deploy)
    else:
        se = arch.get('se_position')
        backbone = dict(type='mmpretrain.RepVGG', deploy=deploy, arch=dict(
            num_blocks=list(arch['num_blocks']), width_factor=list(arch['width_factor']),
            group_layer_map=arch.get('group_layer_map'),
            se_cfg=dict(ratio=arch['se_ratio'], divisor=1) if se else None))
    return MODELS.build(dict(
        type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=7, in_channels=256)))


@pytest.mark.parametrize('arch', [TINY_ARCH, TINY_SE_ARCH], ids=['plain', 'se'])
def test_mmpretrain_repvgg_loads_strictly_with_identical_outputs(tmp_path, arch):
    torch.manual_seed(3)
    theirs = randomize_bn_statistics(mmpretrain_classifier(arch), seed=3).eval()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        expected = theirs(x, mode='tensor')
    path = tmp_path / 'mmpretrain.pth'
    torch.save({'state_dict': theirs.state_dict(), 'meta': {}}, path)

    ours = mmpretrain_classifier(arch, rep_mm_backbone=True).eval()
    report = load_weights(ours, path)
    assert report.kind == 'mmpretrain' and report.ok
    assert len(report.loaded) == len(theirs.state_dict())
    with torch.no_grad():
        assert relative_error(expected, ours(x, mode='tensor')) <= 1e-5
    backbone = RepVGG(arch=dict(arch)).eval()
    report = load_weights(backbone, path, target='backbone')
    assert report.ok and report.skipped == ['head.fc.weight', 'head.fc.bias']
    with torch.no_grad():
        features = theirs.backbone(x)
        assert len(features) == 1
        for a, b in zip(features, backbone(x)):
            assert relative_error(a, b) <= 1e-5

    # deploy form: mmpretrain fuses; rep_mm built with deploy=True loads the fused weights
    theirs.backbone.switch_to_deploy()
    deploy_path = tmp_path / 'mmpretrain_deploy.pth'
    torch.save(theirs.state_dict(), deploy_path)
    ours_deploy = mmpretrain_classifier(arch, rep_mm_backbone=True, deploy=True).eval()
    report = load_weights(ours_deploy, deploy_path)
    assert report.ok and any('rbr_reparam' in k for k in report.loaded)
    with torch.no_grad():
        # compared with mmpretrain's TRAINING-form output: its own deploy forward skips SE
        assert relative_error(expected, ours_deploy(x, mode='tensor')) <= 1e-5


# ---------------------------------------------------------------------------- error reports
def test_deploy_checkpoint_into_training_model_and_reverse_say_so():
    train_sd, deploy_sd = tiny_repvgg().state_dict(), tiny_repvgg(deploy=True).state_dict()
    with pytest.raises(CheckpointError, match=r'checkpoint is in deploy form \(rbr_reparam keys\) '
                                              r'but the model is in training form.*deploy=True'):
        load_weights(tiny_repvgg(), deploy_sd)
    with pytest.raises(CheckpointError, match='checkpoint is in training form.*model is in '
                                              'deploy form.*deploy=False'):
        load_weights(tiny_repvgg(deploy=True), train_sd, strict=False)


def test_missing_unexpected_and_shape_mismatch_are_listed():
    model = tiny_repvgg()
    state_dict = model.state_dict()
    del state_dict['stage2.1.rbr_identity.running_mean']
    state_dict['stage9.extra.weight'] = torch.ones(1)
    state_dict['stage1.0.rbr_dense.conv.weight'] = torch.ones(3, 3, 3, 3)
    with pytest.raises(CheckpointError) as info:
        load_weights(tiny_repvgg(seed=5), state_dict)
    text = str(info.value)
    assert '1 key(s) missing in the checkpoint: stage2.1.rbr_identity.running_mean' in text
    assert '1 key(s) unexpected (not in the model): stage9.extra.weight' in text
    assert 'stage1.0.rbr_dense.conv.weight: checkpoint [3, 3, 3, 3] vs model [16, 16, 3, 3]' in text

    target = tiny_repvgg(seed=5)
    before = target.stage1[0].rbr_dense.conv.weight.clone()
    report = load_weights(target, state_dict, strict=False)
    assert not report.ok and len(report.missing) == 1 and len(report.unexpected) == 1
    assert len(report.loaded) == len(state_dict) - 2
    assert torch.equal(target.stage1[0].rbr_dense.conv.weight, before)  # mismatch not loaded
    assert torch.equal(target.stage4[0].rbr_dense.conv.weight,
                       model.stage4[0].rbr_dense.conv.weight)


def test_listing_is_capped_at_ten_keys():
    state_dict = tiny_repvgg().state_dict()
    for key in list(state_dict)[:25]:
        state_dict['x.' + key] = state_dict.pop(key)
    with pytest.raises(CheckpointError, match=r'25 key\(s\) missing.*\(\+15 more\)'):
        load_weights(tiny_repvgg(), state_dict)


def test_wrong_kind_and_bad_arguments():
    theirs = mmpretrain_classifier(TINY_ARCH).backbone.state_dict()
    assert detect_kind(theirs) == 'mmpretrain'
    with pytest.raises(CheckpointError, match='missing in the checkpoint.*stage0.rbr_dense'):
        load_weights(tiny_repvgg(), theirs, kind='official')
    with pytest.raises(ValueError, match="kind must be one of.*'mmpretrain'"):
        load_weights(tiny_repvgg(), theirs, kind='timm')
    with pytest.raises(ValueError, match='target must be one of'):
        load_weights(tiny_repvgg(), theirs, target='neck')


# ------------------------------------------------------------------------------------ saving
def test_save_atomic_writes_refuses_overwrite_and_replaces_on_request(tmp_path):
    path = tmp_path / 'sub' / 'out.pth'
    save_checkpoint_atomic({'w': torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.arange(3))
    content = path.read_bytes()
    with pytest.raises(FileExistsError, match='overwrite=True'):
        save_checkpoint_atomic({'w': torch.zeros(3)}, path)
    assert path.read_bytes() == content
    save_checkpoint_atomic({'w': torch.ones(3)}, path, overwrite=True)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.ones(3))
    assert sorted(os.listdir(path.parent)) == ['out.pth']
    mode = path.stat().st_mode & 0o777
    assert mode & 0o644 == 0o644 or mode == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_atomic_leaves_nothing_behind_on_error(tmp_path):
    with pytest.raises(Exception):
        save_checkpoint_atomic({'f': lambda: 1}, tmp_path / 'bad.pth')  # lambdas do not pickle
    assert os.listdir(tmp_path) == []
    with pytest.raises(IsADirectoryError):
        save_checkpoint_atomic({}, tmp_path)


# ------------------------------------------------------------------- integrity (CRC, legacy)
def _member_data_offset(path, member):
    """``(start, size)`` of ``member``'s bytes inside the zip file ``path``."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with open(path, 'rb') as stream:
        stream.seek(info.header_offset)
        header = stream.read(30)
    name_len, extra_len = struct.unpack('<HH', header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def _tensor_member(path):
    import zipfile
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if '/data/' in n and n.rsplit('/', 1)[-1].isdigit()]
    return max(names, key=lambda n: _member_data_offset(path, n)[1])  # the largest tensor


def _flip_byte(path, offset):
    data = bytearray(open(path, 'rb').read())
    data[offset] ^= 0x40
    open(path, 'wb').write(bytes(data))


def test_a_byte_changed_inside_a_tensor_record_is_caught_by_the_crc(tmp_path):
    path = tmp_path / 'weights.pth'
    state = tiny_repvgg().state_dict()
    torch.save(state, path)
    member = _tensor_member(path)
    start, size = _member_data_offset(path, member)
    _flip_byte(path, start + size // 2)
    # the problem: torch.load reads the altered file without complaint, with other weights
    altered = torch.load(path, weights_only=True)
    assert any(not torch.equal(altered[k], v) for k, v in state.items())
    with pytest.raises(CheckpointError, match=rf"weights\.pth.*zip member '{member}' fails its "
                                              rf"CRC-32 check.*changed after saving"):
        load_checkpoint_file(path)
    loaded = load_checkpoint_file(path, verify=False)  # the explicit opt-out still loads
    assert set(loaded) == set(state)


def test_a_byte_changed_in_the_pickle_or_a_header_names_the_member(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': tiny_repvgg().state_dict()}, path)
    import zipfile
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        info = archive.getinfo(pickle_name)
    start, size = _member_data_offset(path, pickle_name)
    damaged = tmp_path / 'pickle.pth'
    damaged.write_bytes(path.read_bytes())
    _flip_byte(damaged, start + size - 3)
    with pytest.raises(CheckpointError, match=rf"pickle\.pth.*'{pickle_name}' fails its CRC-32"):
        load_checkpoint_file(damaged)
    header = tmp_path / 'header.pth'
    header.write_bytes(path.read_bytes())
    _flip_byte(header, info.header_offset + 30)  # first byte of the local header's name
    with pytest.raises(CheckpointError, match=rf"header\.pth.*'{pickle_name}': its local header"):
        load_checkpoint_file(header)


def test_a_truncated_zip_names_the_member_it_was_cut_in(tmp_path):
    path = tmp_path / 'full.pth'
    torch.save(tiny_repvgg().state_dict(), path)
    member = _tensor_member(path)
    start, size = _member_data_offset(path, member)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(path.read_bytes()[:start + size // 3])
    with pytest.raises(CheckpointError, match=rf"cut\.pth.*truncated.*central directory.*zip "
                                              rf"member '{member}' is cut: {size // 3} of its bytes "
                                              r"are present"):
        load_checkpoint_file(cut)


def test_legacy_format_loads_with_its_limits_said_and_trailing_bytes_refused(tmp_path):
    path = tmp_path / 'legacy.pth'
    state = tiny_repvgg().state_dict()
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with pytest.warns(UserWarning, match='no checksums.*re-save it'):
        loaded = load_checkpoint_file(path)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    padded = tmp_path / 'padded.pth'
    padded.write_bytes(path.read_bytes() + b'\0' * 7)
    with pytest.raises(CheckpointError, match=r'padded\.pth.*7 unexpected byte\(s\) after the '
                                              r'last storage record'):
        load_checkpoint_file(padded)
    cut = tmp_path / 'legacy_cut.pth'
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r'legacy_cut\.pth.* (truncated or )?corrupted'):
        load_checkpoint_file(cut)


def test_temp_names_carry_the_writer_pid_and_a_saved_file_leaves_none(tmp_path):
    from rep_mm.io import make_temp_file, stale_temp_files
    fd, tmp = make_temp_file(str(tmp_path / 'out.pth'))
    os.close(fd)
    assert os.path.basename(tmp).startswith(f'.out.pth.{os.getpid()}.') and tmp.endswith('.tmp')
    found = stale_temp_files(str(tmp_path / 'out.pth'))
    assert [(t.path, t.pid, t.writer_alive, t.stale) for t in found] == [
        (tmp, os.getpid(), True, False)]  # this process is alive: never stale
    os.unlink(tmp)
    save_checkpoint_atomic({'w': torch.ones(2)}, tmp_path / 'out.pth')
    assert sorted(os.listdir(tmp_path)) == ['out.pth']
