"""The benchmark scripts run (quick mode) and write their JSON / Markdown / PNG (no timing asserts)."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / 'benchmarks'


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_zoo_quick(tmp_path):
    rows = load('model_zoo').main(['--quick', '--out-dir', str(tmp_path)])
    assert {(r['family'], r['arch']) for r in rows} == {
        ('RepVGG', 'A0'), ('RepMLPNet', 'T224'), ('OREPA-RepVGG', 'A0'), ('RepGhostNet', '0.5x')}
    data = json.loads((tmp_path / 'model_zoo_quick.json').read_text())
    assert data['machine']['torch'] and len(data['rows']) == 4
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
    # the other families, each against its converted form (tiny archs in quick mode)
    by_model = {row['model']: row for row in rows}
    assert set(by_model) == {'RepVGG-A0', 'RepOptVGG-B1', 'RepMLPNet-T224', 'OREPA-ResNet18'}
    assert by_model['RepOptVGG-B1']['ratios']['converted / plain stack (time)'] > 0
    assert by_model['OREPA-ResNet18']['ratios']['converted / plain ResNet (time)'] > 0
    for row in by_model.values():
        assert row['results']['train_step/rep_mm train-time']['median_s'] > 0
        assert row['ratios']['train-time / converted (time)'] > 0
    assert rows[0]['ratios']['rep_mm / fastest other train step (time)'] > 0


def test_orepa_training_cost_quick(tmp_path):
    payload = load('orepa_training_cost').main(['--quick', '--out-dir', str(tmp_path)])
    results = payload['results']
    assert set(results) == {'base', 'dbb', 'orepa'}
    for row in results.values():
        assert row['step_median_s'] > 0 and len(row['step_runs_s']) == 2
        assert row['peak_rss_mb'] > row['training_extra_mb'] > 0
    # DBB and OREPA carry more training-time parameters than the plain ResNet-18
    assert results['dbb']['parameters'] > results['base']['parameters']
    assert results['orepa']['parameters'] > results['base']['parameters']
    assert payload['ratios']['orepa / dbb (time)'] > 0
    data = json.loads((tmp_path / 'orepa_training_cost_quick.json').read_text())
    assert 'VmHWM' in data['memory_method'] and data['machine']['torch']
    assert (tmp_path / 'orepa_training_cost_quick.png').stat().st_size > 1000


def test_repopt_speed_quick(tmp_path):
    payload = load('repopt_speed').main(['--quick', '--threads', '1', '--out-dir', str(tmp_path)])
    assert set(payload['optimizer_step']) == {'RepOptSGD', 'torch SGD', 'RepOptAdamW',
                                              'torch AdamW'}
    assert set(payload['train_step']) == {'RepOpt-VGG + RepOptSGD', 'RepVGG train-time + SGD',
                                          'RepOpt-VGG + torch SGD (floor)'}
    for rows in (payload['optimizer_step'], payload['train_step']):
        for row in rows.values():
            assert row['median_s'] > 0 and len(row['runs_s']) == 2
    assert all(ratio > 0 for ratio in payload['ratios'].values())
    assert set(payload['meets_targets']) == {'optimizer_step', 'train_step'}
    data = json.loads((tmp_path / 'repopt_speed_quick.json').read_text())
    assert data['threads'] == 1 and data['machine']['torch_threads'] == 1
    assert data['batch'] == 4 and data['parameters'] > 0
    assert (tmp_path / 'repopt_speed_quick.png').stat().st_size > 1000


def test_conversion_time_quick(tmp_path):
    rows = load('conversion_time').main(['--quick', '--threads', '1',
                                         '--out-dir', str(tmp_path)])
    assert [r['model'] for r in rows] == ['RepVGG-A0', 'RepMLPNet-T224', 'OREPA-ResNet18']
    for row in rows:
        assert row['median_s'] > 0 and len(row['runs_s']) == 2 and row['blocks'] > 0
        assert 0 < row['params_after_m'] <= row['params_before_m']
    data = json.loads((tmp_path / 'conversion_time_quick.json').read_text())
    assert data['threads'] == 1 and data['machine']['torch_threads'] == 1
    assert (tmp_path / 'conversion_time_quick.png').stat().st_size > 1000


def test_ort_latency_quick_and_tables(tmp_path):
    rows = load('ort_latency').main(['--quick', '--threads', '1', '--out-dir', str(tmp_path)])
    assert [r['model'] for r in rows] == ['RepVGG-A0', 'RepVGG-B0', 'RepMLPNet-T224',
                                          'OREPA-ResNet18']
    for row in rows:
        # the converted model gives the same outputs in onnxruntime as in PyTorch
        assert row['max_rel_error'] <= 1e-4 and row['blocks'] > 0
        for runtime in ('pytorch', 'onnxruntime'):
            assert row['results'][runtime]['median_ms'] > 0
            assert len(row['results'][runtime]['runs_ms']) == 3
    data = json.loads((tmp_path / 'ort_latency_quick.json').read_text())
    assert data['threads'] == 1 and data['machine']['cpu_count']
    assert (tmp_path / 'ort_latency_quick.png').stat().st_size > 1000
    # README tables regenerate from the JSON files that exist
    written = load('make_tables').main(['--quick', '--results-dir', str(tmp_path)])
    assert set(written) == {'ort_latency'}
    table = (tmp_path / 'ort_latency_quick.md').read_text()
    assert '| OREPA-ResNet18 | 32px, batch 1 |' in table and '1 thread(s)' in table
