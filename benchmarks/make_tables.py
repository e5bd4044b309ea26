"""Regenerate the Markdown tables (results/<name>.md) from the benchmarks' JSON files.

The README includes these files; run this after any benchmark. Each table is followed by the
machine line from its JSON (CPU, thread count, torch, date). Benchmarks with no JSON yet are
skipped and listed.

    python benchmarks/make_tables.py [--results-dir benchmarks/results] [--quick]
"""
import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR  # noqa: E402


def _table(header: List[str], rows: List[List[str]], align: str = None) -> str:
    align = align or '|---|' + '---:|' * (len(header) - 1)
    lines = ['| ' + ' | '.join(header) + ' |', align]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def model_zoo(data: Dict) -> str:
    """The equivalence table: model_zoo.py's own formatter, so both stay identical."""
    path = Path(__file__).resolve().parent / 'model_zoo.py'
    spec = importlib.util.spec_from_file_location('model_zoo', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.markdown(data['rows'])


def throughput(data: Dict) -> str:
    parts = []
    for row in data['rows']:
        forward = {k.split('/', 1)[1]: v for k, v in row['results'].items()
                   if k.startswith('forward/')}
        step = {k.split('/', 1)[1]: v for k, v in row['results'].items()
                if k.startswith('train_step/')}
        base = forward.get('rep_mm converted', {}).get('median_s')
        body = []
        for name, value in forward.items():
            train = step.get(name)
            body.append([name, f"{value['images_per_s']:.1f}",
                         f"{value['median_s'] / base:.2f}" if base else '-',
                         f"{row['batch'] / train['median_s']:.1f}" if train else '-'])
        model = row.get('model', f"RepVGG-{row['arch']}")
        parts.append(f"**{model}** ({row['size']}px, batch {row['batch']}, median of "
                     f"{row['repeats']})\n\n" +
                     _table(['implementation', 'eval forward (img/s)', 'time / converted',
                             'train step (img/s)'], body))
        ratios = [[k, f'{v:.3f}'] for k, v in row['ratios'].items()]
        parts.append(_table(['ratio', 'value'], ratios))
    return '\n'.join(parts)


def conversion_time(data: Dict) -> str:
    body = [[r['model'], str(r['blocks']), f"{r['params_before_m']:.2f}",
             f"{r['params_after_m']:.2f}", f"{r['median_s'] * 1e3:.1f}"] for r in data['rows']]
    return (f"median of {data['repeats']} conversions\n\n" +
            _table(['model', 'blocks', 'train params (M)', 'deploy params (M)',
                    'conversion (ms)'], body))


def ort_latency(data: Dict) -> str:
    body = [[r['model'], f"{r['size']}px, batch {r['batch']}",
             f"{r['results']['pytorch']['median_ms']:.2f}",
             f"{r['results']['onnxruntime']['median_ms']:.2f}", f"{r['ort_over_torch']:.2f}",
             f"{r['max_rel_error']:.1e}"] for r in data['rows']]
    return (f"converted models, median of {data['repeats']} runs\n\n" +
            _table(['model', 'input', 'PyTorch (ms)', 'onnxruntime (ms)', 'ort / PyTorch',
                    'max rel error'], body))


TABLES: Dict[str, Callable[[Dict], str]] = {
    'model_zoo': model_zoo, 'throughput': throughput, 'conversion_time': conversion_time,
    'ort_latency': ort_latency}


def machine_line(data: Dict) -> str:
    m = data.get('machine', {})
    threads = data.get('threads', m.get('torch_threads'))
    return (f"\n_Measured on {m.get('processor', '?')} with {m.get('cpu_count', '?')} CPUs, "
            f"{threads} thread(s), Python {m.get('python', '?')}, torch {m.get('torch', '?')}, "
            f"{m.get('date', '?')}._\n")


def main(argv=None) -> Dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results-dir', type=Path, default=RESULTS_DIR)
    parser.add_argument('--quick', action='store_true', help='read the *_quick.json files')
    args = parser.parse_args(argv)
    written, missing = {}, []
    for name, formatter in TABLES.items():
        stem = f'{name}_quick' if args.quick else name
        source = args.results_dir / f'{stem}.json'
        if not source.is_file():
            missing.append(source.name)
            continue
        data = json.loads(source.read_text())
        target = args.results_dir / f'{stem}.md'
        target.write_text(formatter(data) + machine_line(data))
        written[name] = target
        print(f'wrote {target}')
    if missing:
        print(f'no JSON yet (skipped): {", ".join(missing)}')
    return written


if __name__ == '__main__':
    main()
