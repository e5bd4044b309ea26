"""rep_mm.verify.compare: errors of two outputs that cannot PASS on NaN, Inf, overflow or nothing."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rep_mm.verify.compare import as_float64, compare

NAN, INF = float('nan'), float('inf')


def test_equal_finite_outputs_pass_with_exact_numbers():
    a = torch.tensor([[1.0, -4.0], [2.0, 0.5]])
    b = a.clone()
    b[0, 1] = -4.0 + 2 ** -10
    result = compare([a], [b], tolerance=1e-3)
    assert result.finite and result.reference_finite
    assert result.max_abs == 2 ** -10 and result.max_rel == 2 ** -10 / 4
    assert result.passed is True and result.failures() == []
    assert 'PASS at 0.001' in result.summary()
    assert compare([a], [b], tolerance=1e-4).passed is False


def test_nan_in_candidate_fails_and_says_where():
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    b = a.clone()
    b[1, 2, 3, 0] = NAN
    b[1, 2, 3, 4] = NAN
    result = compare([torch.zeros(3), a], [torch.zeros(3), b], tolerance=1.0)
    assert result.passed is False
    assert math.isnan(result.max_abs) and math.isnan(result.max_rel)
    assert result.finite_max_abs == 0.0  # elsewhere the outputs agree exactly
    (finding,) = result.nonfinite
    assert (finding.tensor, finding.kind, finding.side, finding.count) == (1, 'NaN', 'candidate', 2)
    assert finding.first_index == (1, 2, 3, 0) and finding.shape == (2, 3, 4, 5)
    text = result.summary()
    assert 'FAIL' in text and 'PASS' not in text
    assert 'tensor 1' in text and '2 NaN in the candidate only' in text and '[1, 2, 3, 0]' in text
    assert result.reference_finite  # the reference is fine: the conversion broke it


def test_nan_in_reference_only():
    a, b = np.ones((4,)), np.ones((4,))
    a[2] = NAN
    result = compare([a], [b], tolerance=1e9)
    (finding,) = result.nonfinite
    assert finding.side == 'reference' and finding.first_index == (2,)
    assert not result.passed and not result.reference_finite


def test_nan_in_both_at_the_same_place_is_not_verified():
    a = np.arange(6.0).reshape(2, 3)
    a[0, 1] = NAN
    b = a.copy()
    result = compare([a], [b], tolerance=1e9)
    (finding,) = result.nonfinite
    assert finding.side == 'both' and finding.count == 1 and not finding.mismatch
    assert result.passed is False and not result.reference_finite
    text = result.summary()
    assert 'reference output itself is not finite' in text and 'cannot be verified' in text
    assert 'PASS' not in text


def test_nan_in_different_places():
    a, b = np.zeros((3, 3)), np.zeros((3, 3))
    a[0, 0] = NAN
    b[2, 1] = NAN
    result = compare([a], [b], tolerance=1.0)
    sides = {(f.side, f.first_index) for f in result.nonfinite}
    assert sides == {('reference', (0, 0)), ('candidate', (2, 1))}
    assert result.passed is False


def test_same_infinity_in_both_is_not_verified_and_opposite_infinities_mismatch():
    a = np.array([1.0, INF, -INF])
    same = compare([a], [a.copy()], tolerance=1e9)
    assert {(f.kind, f.side) for f in same.nonfinite} == {('+inf', 'both'), ('-inf', 'both')}
    assert same.passed is False
    b = np.array([1.0, -INF, INF])  # signs swapped
    swapped = compare([a], [b], tolerance=1e9)
    kinds = {(f.kind, f.side, f.first_index) for f in swapped.nonfinite}
    assert kinds == {('+inf', 'reference', (1,)), ('-inf', 'candidate', (1,)),
                     ('-inf', 'reference', (2,)), ('+inf', 'candidate', (2,))}
    assert all(f.mismatch for f in swapped.nonfinite) and swapped.passed is False


def test_float16_overflow_in_the_candidate():
    reference = torch.tensor([60000.0, 1.0], dtype=torch.float16)
    candidate = (torch.tensor([60000.0, 1.0], dtype=torch.float32) * 2).to(torch.float16)
    assert torch.isinf(candidate[0])
    result = compare([reference], [candidate], tolerance=1e-2)
    (finding,) = result.nonfinite
    assert (finding.kind, finding.side, finding.first_index) == ('+inf', 'candidate', (0,))
    assert result.passed is False


def test_finite_difference_that_overflows_float64_fails():
    big = np.finfo(np.float64).max
    result = compare([np.array([big])], [np.array([-big])], tolerance=1e9)
    assert result.finite and result.max_abs == INF and result.passed is False
    assert any('overflows float64' in note for note in result.notes)


def test_all_zero_reference():
    zeros = torch.zeros(2, 2)
    same = compare([zeros], [zeros.clone()], tolerance=1e-5)
    assert same.max_rel == 0.0 and same.passed
    assert any('all zeros' in note for note in same.notes)
    other = compare([zeros], [torch.full((2, 2), 1e-30)], tolerance=1e-5)
    assert other.max_rel == INF and other.passed is False  # x / 0 is never small
    assert 'all zeros but the candidate is not' in other.summary()


def test_empty_outputs_verify_nothing():
    empty = torch.zeros(1, 0, 5)
    result = compare([empty], [empty.clone()], tolerance=1.0)
    assert result.elements == 0 and result.passed is False
    assert 'nothing compared' in result.summary()
    assert compare([empty], [empty.clone()], tolerance=1.0, allow_empty=True).passed is True
    # one empty tensor among others is fine
    assert compare([empty, torch.ones(2)], [empty, torch.ones(2)], tolerance=0.0).passed


def test_structure_and_shapes_are_checked():
    with pytest.raises(ValueError, match='structure'):
        compare([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)])
    with pytest.raises(ValueError, match='shapes differ at tensor 1'):
        compare([torch.zeros(1), torch.zeros(2)], [torch.zeros(1), torch.zeros(3)])
    with pytest.raises(TypeError, match='complex'):
        compare([torch.zeros(1, dtype=torch.complex64)], [torch.zeros(1)])


def test_no_tolerance_still_fails_on_nan_and_names_are_used():
    a = np.ones(3)
    b = np.array([1.0, NAN, 1.0])
    result = compare([a], [b], names=['logits'])
    assert result.tolerance is None and result.passed is False
    assert 'tensor 0 (logits)' in result.summary()
    assert compare([a], [a.copy()]).passed is None  # nothing to judge against
    with pytest.raises(ValueError, match='names'):
        compare([a], [a], names=['x', 'y'])


def test_nan_tolerance_never_passes():
    assert compare([np.ones(2)], [np.ones(2)], tolerance=NAN).passed is False


def test_torch_bf16_and_numpy_inputs_and_scalars():
    x = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    assert as_float64(x).dtype == np.float64 and as_float64(x).tolist() == [1.5, -2.0]
    assert compare([x], [np.array([1.5, -2.0], np.float32)], tolerance=0.0).passed
    assert compare(3.0, 3.0, tolerance=0.0).passed  # a single (0-d) value


def test_to_dict_is_json_safe_unless_asked():
    import json
    result = compare([np.ones(2)], [np.array([NAN, 1.0])])
    data = result.to_dict()
    assert data['max_abs'] is None and data['max_rel'] is None and not data['finite']
    assert data['nonfinite'][0]['first_index'] == [0] and data['failures']
    json.dumps(data, allow_nan=False)  # strict JSON
    raw = result.to_dict(json_safe=False)
    assert math.isnan(raw['max_rel']) and f'{raw["max_rel"]:.3g}' == 'nan'


VALUES = st.sampled_from([NAN, INF, -INF])


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=4), data=st.data(),
       where=st.sampled_from(['reference', 'candidate', 'both']))
def test_any_injected_nonfinite_value_fails_and_is_located(shape, data, where):
    size = int(np.prod(shape)) if shape else 1
    rng = np.random.default_rng(size)
    a = np.array(rng.standard_normal(shape), dtype=np.float64).reshape(shape)
    b = np.array(a + 1e-12 * rng.standard_normal(shape), dtype=np.float64).reshape(shape)
    flat = data.draw(st.integers(0, size - 1), label='position')
    value = data.draw(VALUES, label='value')
    index = np.unravel_index(flat, a.shape)
    if where in ('reference', 'both'):
        a[index] = value
    if where in ('candidate', 'both'):
        b[index] = value
    result = compare([a], [b], tolerance=1e9)
    assert result.passed is False and math.isnan(result.max_rel)
    assert 'PASS' not in result.summary()
    kind = 'NaN' if math.isnan(value) else ('+inf' if value > 0 else '-inf')
    (finding,) = result.nonfinite
    assert (finding.kind, finding.side, finding.count) == (kind, where, 1)
    assert finding.first_index == tuple(int(i) for i in index)
    # the finite part is still measured
    assert result.finite_max_abs <= 1e-11


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       positions=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=5))
def test_first_index_and_count_of_several_nans(shape, positions):
    a = np.ones(shape)
    b = a.copy()
    flat_positions = sorted({p % a.size for p in positions})
    b.reshape(-1)[flat_positions] = NAN
    (finding,) = compare([a], [b], tolerance=1.0).nonfinite
    assert finding.count == len(flat_positions)
    assert finding.first_index == tuple(int(i) for i in np.unravel_index(flat_positions[0],
                                                                         a.shape))
