"""Markdown table of several ``benchmarks/int8.py`` result files: one line per (run, task),
per model ``fp32 -> int8`` metric and the int8-vs-fp32 logit SNR (dB).

    python benchmarks/int8_search_table.py RESULT.json [RESULT.json ...]

Reads both the current layout (``tasks``) and the classification-only layout of earlier runs
(``rows`` with ``fp32_top1`` / ``int8_top1``, recorded as such in the setting column)."""
import argparse
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

ROWS = ('RepVGG PTQ', 'RepVGG QAT-after-conversion', 'RepVGG EqK-QAT', 'RepOpt-VGG PTQ',
        'plain VGG PTQ')
SHORT = ('RepVGG PTQ', 'QAT-after-conv', 'EqK-QAT', 'RepOpt-VGG PTQ', 'plain PTQ')


def _arch_name(arch: Dict) -> str:
    known = {(1, 2, 2, 1): 'tiny', (2, 4, 14, 1): 'a0-like'}
    return known.get(tuple(arch['num_blocks']), json.dumps(arch))


def parts(payload: Dict) -> Iterator[Tuple[str, str, Dict[str, Tuple[float, float, float]]]]:
    """``(task, setting text, {row: (fp32, int8, snr)})`` of one result file."""
    top = payload['setting']
    weights = 'per-tensor' if top['per_tensor'] else 'per-channel'
    if 'tasks' not in payload:  # classification-only layout
        text = (f"cls {_arch_name(top['arch'])}, {top['epochs']} ep, wd {top['weight_decay']}, "
                f"{weights} (QAT fq {top.get('qat_fake_quant_weights', 'per-channel')}), "
                f"seed {top['seed']}")
        yield 'classification', text, {
            n: (r['fp32_top1'], r['int8_top1'], r['logits']['snr_db'])
            for n, r in payload['rows'].items()}
        return
    for task, part in payload['tasks'].items():
        s = part['setting']
        if task == 'classification':
            text = (f"cls {_arch_name(s['arch'])}, {s['epochs']} ep, wd {s['weight_decay']}, "
                    f"{weights}, seed {top['seed']}")
        else:
            text = (f"seg PSPNet tiny, {s['iters']} it (+{s['qat_iters']} QAT), "
                    f"wd {s['weight_decay']}, {weights}, seed {top['seed']}")
        yield task, text, {n: (r['fp32'], r['int8'], r['logits']['snr_db'])
                           for n, r in part['rows'].items()}


def table(paths: List[Path]) -> str:
    lines = ['| setting | ' + ' | '.join(SHORT) + ' |',
             '| --- |' + ' --- |' * len(SHORT)]
    for path in paths:
        payload = json.loads(Path(path).read_text())
        if payload.get('quick'):
            continue
        for _, text, rows in parts(payload):
            cells = []
            for name in ROWS:
                fp32, int8, snr = rows[name]
                cells.append(f'{fp32:.2f} -> {int8:.2f} ({snr:.1f} dB)')
            lines.append(f'| {text} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='+', type=Path, help='int8.json files')
    text = table(parser.parse_args(argv).results)
    print(text)
    return text


if __name__ == '__main__':
    main()
