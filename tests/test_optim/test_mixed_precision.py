"""fp16 / bf16 models convert by folding in float32, then casting back (mixed_precision.py).

Quick mode (tiny RepVGG, RepMLPNet, DBB- and OREPA-ResNet): the fused kernels of a half model
are bit-identical to folding an exact float32 copy and casting back; their error against the
float64 fold is within the unit roundoff of the format (round to nearest: |fl(k) - k| <= u |k|,
u = 2^-11 for float16, 2^-8 for bfloat16); the converted half model is about as accurate as the
training form run in the same precision (both against the float64 reference).
"""
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / 'benchmarks' / 'mixed_precision.py'
UNIT_ROUNDOFF = {'float32': 2.0 ** -24, 'float16': 2.0 ** -11, 'bfloat16': 2.0 ** -8}


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp('mixed_precision')
    spec = importlib.util.spec_from_file_location('mixed_precision', BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(['--quick', '--out-dir', str(out)]), out


def test_every_family_folds_in_fp32_and_casts_back(quick):
    payload, _ = quick
    assert set(payload['results']) == {'RepVGG', 'RepMLPNet', 'ResNet-DBB', 'ResNet-OREPA'}
    for family, rows in payload['results'].items():
        for dtype, row in rows.items():
            assert row['blocks'] > 0, (family, dtype)
            assert row['dtype_kept'], (family, dtype)
            assert row['fp32_fold_then_cast'], f'{family} {dtype}: not folded in float32'
            # the only error of a fused kernel is the final rounding to the format
            assert row['kernel_vs_fp64'] <= UNIT_ROUNDOFF[dtype] * (1 + 1e-6) or \
                dtype == 'float32' and row['kernel_vs_fp64'] <= 1e-6, (family, dtype, row)


def test_converted_half_models_are_as_accurate_as_their_training_form(quick):
    payload, _ = quick
    for family, rows in payload['results'].items():
        assert rows['float32']['deploy_vs_ref'] <= 1e-5, family
        for dtype in ('float16', 'bfloat16'):
            row = rows[dtype]
            assert row['train_vs_ref'] > rows['float32']['train_vs_ref']  # half is coarser
            assert row['deploy_vs_ref'] <= 3 * row['train_vs_ref'], (family, dtype, row)


def test_json_and_png_are_written(quick):
    _, out = quick
    data = json.loads((out / 'mixed_precision_quick.json').read_text())
    assert data['quick'] and data['machine']['torch']
    assert data['results']['RepVGG']['float16']['deploy_vs_ref'] > 0
    assert (out / 'mixed_precision_quick.png').stat().st_size > 1000
