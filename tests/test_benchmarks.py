"""The benchmark scripts run (quick mode) and write their JSON / Markdown / PNG (no timing asserts)."""
import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_zoo_quick(tmp_path):
    rows = load('model_zoo').main(['--quick', '--out-dir', str(tmp_path)])
    assert {r['arch'] for r in rows} == {'A0', 'T224'}
    data = json.loads((tmp_path / 'model_zoo_quick.json').read_text())
    assert data['machine']['torch'] and len(data['rows']) == 2
    for row in data['rows']:
        assert row['fp32_max_rel'] <= 1e-5 and row['fp64_max_rel'] <= 1e-10
        assert row['deploy_params_m'] > 0
    assert (tmp_path / 'model_zoo_quick.png').stat().st_size > 1000
    assert '| RepVGG-A0 |' in (tmp_path / 'model_zoo_quick.md').read_text()


def test_throughput_quick(tmp_path):
    rows = load('throughput').main(['--quick', '--out-dir', str(tmp_path)])
    results = rows[0]['results']
    for name in ('rep_mm train-time', 'rep_mm converted', 'plain conv stack',
                 'mmpretrain train-time', 'mmpretrain converted'):
        assert results[f'forward/{name}']['images_per_s'] > 0
    assert 'train_step/rep_mm train-time' in results
    assert rows[0]['ratios']['converted / plain stack (time)'] > 0
    data = json.loads((tmp_path / 'throughput_quick.json').read_text())
    assert data['threads'] >= 1 and data['machine']['cpu_count']
    assert (tmp_path / 'throughput_quick.png').stat().st_size > 1000
