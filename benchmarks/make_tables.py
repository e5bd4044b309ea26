"""Regenerate the Markdown tables (results/<name>.md) from the benchmarks' JSON files.

The README includes these files; run this after any benchmark. Each table is followed by the
machine line from its JSON (CPU, thread count, torch, date). Benchmarks with no JSON yet are
skipped and listed.

    python benchmarks/make_tables.py [--results-dir benchmarks/results] [--quick] [--readme README.md]

With ``--readme``, every block ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->`` of that file
is replaced by the table of ``NAME`` (written atomically; blocks without a table are kept).
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


def repopt_speed(data: Dict) -> str:
    targets = data.get('targets', {})
    rows = []
    for name, ratio in data['ratios'].items():
        kind = name.split(' ', 1)[0]
        target = targets.get(kind) if '/ floor' not in name else None
        rows.append([name, f'{ratio:.2f}x', f'<= {target}x' if target else '-'])
    return _table(['measured side by side (median time ratio)', 'ratio', 'target'], rows)


def orepa_training_cost(data: Dict) -> str:
    rows = [[variant, f"{r['step_median_s']:.3f}", f"{r['training_extra_mb']:.0f}",
             f"{r['parameters'] / 1e6:.2f}"] for variant, r in data['results'].items()]
    table = _table([f"{data['model']} (batch {data['batch']}, {data['size']} px)",
                    'train step (s, median)', 'training memory (MB)', 'params (M)'], rows)
    ratios = ', '.join(f'{k} {v:.2f}x' for k, v in data['ratios'].items())
    return table + f'\nRatios: {ratios}.\n'


def mixed_precision(data: Dict) -> str:
    rows = []
    for model, per_dtype in data['results'].items():
        for dtype, r in per_dtype.items():
            rows.append([model, dtype, f"{r['train_vs_ref']:.1e}", f"{r['deploy_vs_ref']:.1e}",
                         f"{r['deploy_vs_train']:.1e}", 'yes' if r['fp32_fold_then_cast'] else 'no'])
    return _table(['model', 'dtype', 'training form vs fp64', 'converted vs fp64',
                   'converted vs training form', 'fused in fp32, cast back'], rows)


TABLES: Dict[str, Callable[[Dict], str]] = {
    'model_zoo': model_zoo, 'throughput': throughput, 'conversion_time': conversion_time,
    'ort_latency': ort_latency, 'repopt_speed': repopt_speed,
    'orepa_training_cost': orepa_training_cost,
    'mixed_precision': mixed_precision}


def machine_line(data: Dict) -> str:
    m = data.get('machine', {})
    threads = data.get('threads', m.get('torch_threads'))
    return (f"\n_Measured on {m.get('processor', '?')} with {m.get('cpu_count', '?')} CPUs, "
            f"{threads} thread(s), Python {m.get('python', '?')}, torch {m.get('torch', '?')}, "
            f"{m.get('date', '?')}._\n")


def update_readme(readme: Path, tables: Dict[str, str]) -> List[str]:
    """Replace the marked blocks of ``readme`` by ``tables``; return the names replaced."""
    import os
    import re
    import tempfile
    text, replaced = readme.read_text(), []
    for name, table in tables.items():
        pattern = re.compile(rf'(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)',
                             re.DOTALL)
        text, count = pattern.subn(lambda m: m.group(1) + table + m.group(2), text)
        if count:
            replaced.append(name)
    handle, tmp = tempfile.mkstemp(prefix=f'.{readme.name}.', dir=readme.parent)
    with os.fdopen(handle, 'w') as stream:
        stream.write(text)
    os.replace(tmp, readme)
    return replaced


def main(argv=None) -> Dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results-dir', type=Path, default=RESULTS_DIR)
    parser.add_argument('--quick', action='store_true', help='read the *_quick.json files')
    parser.add_argument('--readme', type=Path, default=None,
                        help='also replace the <!-- table:NAME --> blocks of this Markdown file')
    args = parser.parse_args(argv)
    written, missing, tables = {}, [], {}
    for name, formatter in TABLES.items():
        stem = f'{name}_quick' if args.quick else name
        source = args.results_dir / f'{stem}.json'
        if not source.is_file():
            missing.append(source.name)
            continue
        data = json.loads(source.read_text())
        target = args.results_dir / f'{stem}.md'
        tables[name] = formatter(data) + machine_line(data)
        target.write_text(tables[name])
        written[name] = target
        print(f'wrote {target}')
    if missing:
        print(f'no JSON yet (skipped): {", ".join(missing)}')
    if args.readme is not None:
        print(f"{args.readme}: replaced {', '.join(update_readme(args.readme, tables)) or 'nothing'}")
    return written


if __name__ == '__main__':
    main()
