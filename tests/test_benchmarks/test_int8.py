"""benchmarks/int8.py --quick runs as a script and writes its five rows (no accuracy / timing
asserts: the quick trainings are 2 iterations each)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'int8.py'
ROWS = ('RepVGG PTQ', 'RepVGG QAT-after-conversion', 'RepVGG EqK-QAT', 'RepOpt-VGG PTQ',
        'plain VGG PTQ')


def test_int8_benchmark_quick(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, str(SCRIPT), '--quick', '--out-dir', str(out), '--work-dir',
         str(tmp_path / 'work')], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / 'int8_quick.json').read_text())
    assert data['quick'] is True and data['machine']['torch']
    assert tuple(data['rows']) == ROWS
    assert data['setting']['per_tensor'] is False and data['setting']['epochs'] == 1
    for name, row in data['rows'].items():
        for key in ('fp32_top1', 'int8_top1'):
            assert 0.0 <= row[key] <= 100.0, (name, key, row[key])
        assert math.isclose(row['drop'], row['fp32_top1'] - row['int8_top1'], abs_tol=1e-9)
        logits = row['logits']
        assert logits['images'] == data['test_images'] > 0
        assert math.isfinite(logits['max_abs_rel_error']) and 0 <= logits['max_abs_rel_error'] < 10
        # int8 graphs differ from fp32 ones, but not by more than the signal
        assert math.isfinite(logits['snr_db']) and 0 < logits['snr_db'] < 200
        assert 0 <= logits['changed_predictions'] <= logits['images']
        # the logits read from the graphs agree with quantize's own val metric
        for form in ('fp32', 'int8'):
            assert math.isclose(logits['top1_from_logits'][form], row[f'{form}_top1'],
                                abs_tol=1e-6), (name, form)
        for form in ('fp32', 'int8'):
            assert math.isfinite(row['latency_ms'][form]) and row['latency_ms'][form] > 0
        assert row['latency_int8_over_fp32'] > 0
    assert (out / 'int8_quick.png').stat().st_size > 1000
    md = (out / 'int8_quick.md').read_text()
    assert all(f'| {name} |' in md for name in ROWS)
