"""Shared fixtures: the reference data of the original implementations, numeric helpers."""
import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# measured facts of the original implementations, kept in the repository (tests/data/reference,
# provenance in its README.md); REP_MM_REFERENCE points at another copy
REFERENCE_DIR = Path(os.environ.get('REP_MM_REFERENCE', REPO_ROOT / 'tests' / 'data' / 'reference'))

# at most 2 threads (CI's machine); fewer when OMP_NUM_THREADS asks for it (parallel jobs)
torch.set_num_threads(max(1, min(int(os.environ.get('OMP_NUM_THREADS') or 2), os.cpu_count() or 1)))


def reference_path(*parts: str) -> Path:
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():  # part of the repository: missing data is an error, not a skip
        raise FileNotFoundError(f'reference data not found at {path} (tests/data/reference is '
                                f'part of the repository; REP_MM_REFERENCE overrides it)')
    return path


def load_manifest(name: str):
    """``[(key, shape), ...]`` of an official state_dict (../shared/reference/manifests)."""
    with open(reference_path('manifests', f'{name}.json')) as f:
        return [(key, tuple(shape)) for key, shape in json.load(f)]


def load_golden(case: str) -> dict:
    return torch.load(reference_path('golden', f'{case}.pt'), weights_only=True)


def relative_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """``max|a - b| / max|a|`` in float64."""
    a, b = reference.detach().double(), candidate.detach().double()
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.fixture(scope='session')
def data_root(tmp_path_factory) -> str:
    """The digits tree (32 px, split seed 0) the tool and training tests read; written once."""
    from rep_mm.datasets import prepare_digits
    root = tmp_path_factory.mktemp('data') / 'digits'
    prepare_digits(root, size=32, seed=0)
    return str(root)
