"""The README's copy-pasteable config snippets are real configs: they build, run and convert."""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from rep_mm import reparameterize
from rep_mm.verify.bn_statistics import randomize_bn_statistics

README = Path(__file__).resolve().parents[1] / 'README.md'


def config_snippets():
    """Every ```python block of the README that is a whole config (it has a ``_base_``)."""
    blocks = re.findall(r'```python\n(.*?)```', README.read_text(), re.DOTALL)
    return [block for block in blocks if block.lstrip().startswith('_base_')]


def test_the_readme_has_a_snippet_per_toolbox():
    scopes = {re.search(r"'(\w+)::", snippet).group(1) for snippet in config_snippets()}
    assert scopes == {'mmpretrain', 'mmseg', 'mmdet'}


@pytest.mark.parametrize('index', range(3))
def test_snippet_builds_runs_and_converts(index, tmp_path):
    snippet = config_snippets()[index]
    path = tmp_path / f'snippet_{index}.py'
    path.write_text(snippet)
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == dict(imports=['rep_mm'], allow_failed_imports=False)
    assert [h.type for h in cfg.custom_hooks] == ['rep_mm.ReparameterizeHook']
    scope = cfg.get('default_scope', 'mmengine')
    init_default_scope(scope)
    from mmengine.registry import MODELS
    cfg.model.backbone.pop('init_cfg', None)  # no pretrained file in tests
    if 'norm_cfg' in cfg.model.backbone:  # SyncBN needs a process group
        cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    for head in ('decode_head', 'auxiliary_head'):
        if head in cfg.model:
            cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    model = randomize_bn_statistics(MODELS.build(cfg.model), seed=index).eval()
    inputs = torch.randn(1, 3, 64, 64)
    report = reparameterize(model, verify=lambda m: m(inputs, mode='tensor'
                                                      ) if scope != 'mmdet'
                            else m.extract_feat(inputs))
    assert report.passed and report.max_rel_error <= 1e-5
    assert len(report.converted) > 0


def test_the_form_aware_loading_snippet_runs_as_shown(tmp_path, monkeypatch, capsys):
    """The README's ``load_into`` snippet, run from the repo root on the two checkpoint forms
    the demo writes (made here from the same config: training form and converted)."""
    import copy
    snippet = next(b for b in re.findall(r'```python\n(.*?)```', README.read_text(), re.DOTALL)
                   if 'load_into(' in b)
    path = re.search(r"load_into\(model, '([^']+)'\)", snippet).group(1)
    from rep_mm.integrations import build_model
    cfg = Config.fromfile(str(README.parent / 'configs/repvgg/repvgg-tiny_1xb32_digits.py'))
    trained = randomize_bn_statistics(build_model(cfg), seed=3)
    converted = copy.deepcopy(trained)
    reparameterize(converted)
    monkeypatch.chdir(README.parent)
    for form, model in (('deploy', converted), ('training', trained)):
        checkpoint = tmp_path / f'{form}.pth'
        torch.save({'state_dict': model.state_dict()}, checkpoint)
        namespace = {}
        exec(compile(snippet.replace(path, str(checkpoint)), 'README.md', 'exec'), namespace)
        assert namespace['result'].form == form
        assert capsys.readouterr().out.startswith(form)
        loaded = namespace['model'].state_dict()
        assert loaded.keys() == model.state_dict().keys()
        assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
