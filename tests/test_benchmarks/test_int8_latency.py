"""benchmarks/int8_latency.py --quick runs, quantizes with int8 kernels and writes JSON + PNG
(no timing assert: the quick model is tiny and the machine is shared)."""
import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_latency.py"


def test_int8_latency_quick(tmp_path):
    spec = importlib.util.spec_from_file_location('int8_latency', BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(['--quick', '--out-dir', str(tmp_path)])
    data = json.loads((tmp_path / 'int8_latency_quick.json').read_text())
    assert data['quick'] and data['result']['threads'] == 1
    row = data['result']
    assert row['blocks_converted'] == result['blocks_converted'] > 0
    # every Conv of the converted model runs as QLinearConv; only the fc stays float
    assert row['int8_kernels']['QLinearConv'] == row['blocks_converted']
    assert row['float_compute_ops'] == {'Gemm': 1}
    assert row['int8_over_fp32'] == (row['latency']['int8']['median_ms'] /
                                     row['latency']['fp32']['median_ms'])
    assert (tmp_path / 'int8_latency_quick.png').stat().st_size > 1000
