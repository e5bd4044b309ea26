"""benchmarks/int8.py --quick runs as a script and writes its five rows for both tasks (no
accuracy / timing asserts: the quick trainings are 2 iterations each); the logits it reads from
the graphs are checked against quantize's own evaluation."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'int8.py'
ROWS = ('RepVGG PTQ', 'RepVGG QAT-after-conversion', 'RepVGG EqK-QAT', 'RepOpt-VGG PTQ',
        'plain VGG PTQ')


def check_common(name, row, metric_max=100.0):
    for key in ('fp32', 'int8'):
        assert 0.0 <= row[key] <= metric_max, (name, key, row[key])
    assert math.isclose(row['drop'], row['fp32'] - row['int8'], abs_tol=1e-9)
    logits = row['logits']
    assert math.isfinite(logits['max_abs_rel_error']) and 0 < logits['max_abs_rel_error'] < 10
    # int8 graphs differ from fp32 ones, but not by more than the signal
    assert math.isfinite(logits['snr_db']) and 0 < logits['snr_db'] < 200
    assert 0 <= logits['changed_argmax'] <= logits['argmax_positions']
    for form in ('fp32', 'int8'):
        assert math.isfinite(row['latency_ms'][form]) and row['latency_ms'][form] > 0
    assert row['latency_int8_over_fp32'] > 0
    assert row['int8_kernels']['int8_kernels'].get('QLinearConv', 0) >= 7, name


def test_int8_benchmark_quick(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, str(SCRIPT), '--quick', '--out-dir', str(out), '--work-dir',
         str(tmp_path / 'work')], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / 'int8_quick.json').read_text())
    assert data['quick'] is True and data['machine']['torch']
    assert data['setting']['per_tensor'] is False
    assert tuple(data['tasks']) == ('classification', 'segmentation')
    cls, seg = data['tasks']['classification'], data['tasks']['segmentation']
    assert tuple(cls['rows']) == ROWS and tuple(seg['rows']) == ROWS
    assert cls['setting']['epochs'] == 1 and seg['setting']['iters'] == 2
    for name, row in cls['rows'].items():
        check_common(name, row)
        assert row['logits']['images'] == cls['test_images'] == 32
        # the logits read from the graphs give quantize's own val metric
        for form in ('fp32', 'int8'):
            assert math.isclose(row['logits']['top1_from_logits'][form], row[form],
                                abs_tol=1e-6), (name, form)
    for name, row in seg['rows'].items():
        check_common(name, row)
        logits = row['logits']
        assert logits['images'] == seg['val_scenes'] == 8
        assert logits['argmax_positions'] == 8 * 72 * 72  # every pixel of the 72x72 outputs
        # the predictions packed from these logits agree as quantize's evaluation says
        agreement = row['agreement']
        assert agreement['unit'] == 'pixels' and agreement['of'] == logits['packed_pixels']
        assert math.isclose(agreement['fraction'],
                            logits['packed_same_pixels'] / logits['packed_pixels'],
                            abs_tol=1e-12), name
        assert row['quantization']['weights'] == 'int8 per-channel', row['quantization']
    assert (out / 'int8_quick.png').stat().st_size > 1000
    md = (out / 'int8_quick.md').read_text()
    assert '## classification' in md and '## segmentation' in md
    assert all(md.count(f'| {name} |') == 2 for name in ROWS)
