"""``rep-mm`` and the checkpoint forms: the converted file is tagged, a checkpoint of the wrong
form (or with a wrong tag) is bad input (exit 2), and only dedicated errors are bad input: an
unexpected exception propagates with its traceback."""
import re

import pytest
import torch

import rep_mm
from rep_mm.cli.dispatch import COMMANDS, build_config_model, main
from rep_mm.io import FORM_KEY, load_checkpoint_file
from rep_mm.verify.bn_statistics import randomize_bn_statistics

TINY = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.25])
CONFIG = f"""
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier',
             backbone=dict(type='rep_mm.RepVGG', arch={TINY!r}),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=4, in_channels=128))
"""


@pytest.fixture
def files(tmp_path):
    config = tmp_path / 'cls.py'
    config.write_text(CONFIG)
    model = randomize_bn_statistics(build_config_model(str(config))[0], seed=1).eval()
    train = tmp_path / 'train.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, train)
    return str(config), str(train), model


def test_convert_tags_its_output_and_verify_takes_it(files, tmp_path, capsys):
    config, train, _ = files
    out = tmp_path / 'deploy.pth'
    assert main(['convert', config, train, str(out), '--shape', '32']) == 0
    assert 'load: training-form checkpoint' in capsys.readouterr().out
    assert load_checkpoint_file(out)['meta'][FORM_KEY] == 'deploy'
    assert main(['verify', config, train, '--shape', '32', '--deploy-checkpoint', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'load deploy checkpoint: deploy-form checkpoint, tagged; 5 block(s)' in printed


def test_checkpoints_of_the_wrong_form_are_bad_input(files, tmp_path, capsys):
    config, train, model = files
    assert main(['verify', config, train, '--shape', '32', '--deploy-checkpoint', train]) == 2
    assert re.search(r'rep-mm verify: error: checkpoint is in training form \(rbr_dense / '
                     r'rbr_1x1 keys\) but a deploy-form \(converted\) checkpoint is needed here',
                     capsys.readouterr().err)
    folded = tmp_path / 'folded.pth'
    torch.save({'state_dict': rep_mm.reparameterize(model, inplace=False).model.state_dict(),
                'meta': {FORM_KEY: 'training'}}, folded)
    assert main(['verify', config, str(folded), '--shape', '32']) == 2
    assert re.search(r"says 'training' but its keys are those of the deploy form of "
                     r"ImageClassifier \(rbr_reparam keys\): the tag is wrong",
                     capsys.readouterr().err)


def test_a_config_whose_model_cannot_be_built_is_bad_input(tmp_path, capsys):
    config = tmp_path / 'typo.py'
    config.write_text(CONFIG.replace("'rep_mm.RepVGG'", "'rep_mm.RepVGGG'"))
    assert main(['verify', str(config), str(tmp_path / 'x.pth'), '--shape', '32']) == 2
    assert re.search(r"typo\.py': its model cannot be built: KeyError: .*RepVGGG",
                     capsys.readouterr().err)


def test_an_unexpected_exception_is_not_bad_input(files, tmp_path, monkeypatch):
    """A KeyError / ValueError from a bug is not reported as exit 2: it propagates."""
    import rep_mm.cli.convert as convert
    config, train, _ = files

    def broken(*args, **kwargs):
        raise KeyError('a bug')

    monkeypatch.setattr(convert, '_reparameterize', broken)
    with pytest.raises(KeyError, match='a bug'):
        main(['convert', config, train, str(tmp_path / 'o.pth'), '--shape', '32'])
    assert not (tmp_path / 'o.pth').exists()


def test_one_table_lists_every_command(capsys):
    assert main(['--help']) == 0
    printed = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert re.search(rf'{re.escape(name)}\s+{re.escape(command.help[:20])}', printed)
    assert main(['no-such-command']) == 2
    assert 'invalid choice' in capsys.readouterr().err
    assert main(['data', 'nope']) == 2
    assert "rep-mm data: error: data: unknown data set 'nope'" in capsys.readouterr().err
