"""tools/test.py's checks before the Runner: the checkpoint's form against the config's model
(through rep_mm.io.forms), a wrong form tag, and ``--out`` needing ``--overwrite``. Cheap: the
checks run on a model built here, no Runner."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

import rep_mm
from rep_mm.backbones import RepGhostNet
from rep_mm.io import FORM_KEY

REPO = Path(__file__).resolve().parents[2]
GHOST = dict(width=0.5, cfgs=(((3, 16, 16, 0, 1),), ((3, 48, 24, 0, 2),)))


def load_test_tool():
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        spec = importlib.util.spec_from_file_location('rep_mm_tools_test',
                                                      REPO / 'tools' / 'test.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / 'tools'))
    return module


@pytest.fixture(scope='module')
def tool():
    return load_test_tool()


def _save(path, state, tag=None):
    torch.save({'state_dict': state, 'meta': {FORM_KEY: tag} if tag else {}}, path)
    return str(path)


def test_a_deploy_checkpoint_for_a_training_config_names_the_fix(tool, tmp_path, capsys):
    model = RepGhostNet(arch=GHOST, out_indices=(-1,))
    folded = rep_mm.reparameterize(model, inplace=False).model
    path = _save(tmp_path / 'deploy.pth', folded.state_dict())
    with pytest.raises(SystemExit) as exit_:
        tool.check_checkpoint_fits(model, path)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tools/test.py: error: checkpoint '{path}' does not fit the model")
    assert re.search(r'the checkpoint is in deploy form \(cheap_operation keys\) but the model is '
                     r'in training form: add --cfg-options model.backbone.deploy=True', err)
    tool.check_checkpoint_fits(folded, path)  # a deploy-form model takes it


def test_a_wrong_tag_is_refused_even_when_the_keys_fit(tool, tmp_path, capsys):
    model = RepGhostNet(arch=GHOST, out_indices=(-1,))
    tool.check_checkpoint_fits(model, _save(tmp_path / 'ok.pth', model.state_dict(), 'training'))
    path = _save(tmp_path / 'tagged.pth', model.state_dict(), 'deploy')
    with pytest.raises(SystemExit):
        tool.check_checkpoint_fits(model, path)
    assert "says 'deploy' but its keys are those of the training form" in capsys.readouterr().err


def test_an_existing_out_needs_overwrite(tool, tmp_path, capsys):
    config = REPO / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
    ckpt = _save(tmp_path / 'c.pth', {'w': torch.ones(1)})
    out = tmp_path / 'metrics.json'
    out.write_text('{}')
    with pytest.raises(SystemExit) as exit_:
        tool.main([str(config), ckpt, '--out', str(out), '--work-dir', str(tmp_path / 'work')])
    assert exit_.value.code == 2
    assert re.search(r"tools/test.py: error: output .*metrics\.json' exists; pass --overwrite",
                     capsys.readouterr().err)
    assert out.read_text() == '{}' and not (tmp_path / 'work').exists()
