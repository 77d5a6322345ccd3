"""pure_core.quantiles by hand: the probe set, activation bands cut by rank percentiles, references left out
after the cut, an even spread inside each band, and bands shorter than asked."""

from __future__ import annotations

import numpy as np
import pytest

from pure_core.quantiles import DEFAULT_BANDS, activation_bands, check_bands, even_spread, probe_indices

# 200 distinct activations in a shuffled order: the image at position p has activation VALUES[p], and the
# band rule works on ranks, so we can name every band member by hand through its activation.
VALUES = np.random.default_rng(4).permutation(200).astype(np.float32)


def _activations(chosen) -> list[list[float]]:
    return [VALUES[positions].tolist() for _, positions in chosen]


def test_the_probe_set_is_a_seeded_sorted_sample_and_the_whole_dataset_when_smaller():
    probe = probe_indices(3000, 1000, seed=0)
    assert probe.dtype == np.int64 and len(probe) == 1000 and len(np.unique(probe)) == 1000
    assert np.all(np.diff(probe) > 0) and probe.min() >= 0 and probe.max() < 3000
    np.testing.assert_array_equal(probe, np.sort(np.random.default_rng(0).permutation(3000)[:1000]))
    np.testing.assert_array_equal(probe, probe_indices(3000, 1000, seed=0))
    assert not np.array_equal(probe, probe_indices(3000, 1000, seed=1))
    np.testing.assert_array_equal(probe_indices(300, 1000, seed=0), np.arange(300))
    np.testing.assert_array_equal(probe_indices(300, 300, seed=5), np.arange(300))


def test_even_spread_keeps_first_and_last_and_never_repeats():
    assert even_spread(8, 6).tolist() == [0, 1, 3, 4, 6, 7]  # 0, 1.4, 2.8, 4.2, 5.6, 7 rounded half up
    assert even_spread(40, 6).tolist() == [0, 8, 16, 23, 31, 39]
    assert even_spread(3, 6).tolist() == [0, 1, 2] and even_spread(0, 6).tolist() == []
    assert even_spread(5, 1).tolist() == [0] and even_spread(5, 0).tolist() == []
    for n in range(1, 60):
        for k in range(1, 9):
            spread = even_spread(n, k)
            assert len(spread) == min(n, k) and np.all(np.diff(spread) > 0) and spread[0] == 0
            assert k == 1 or spread[-1] == n - 1


def test_bands_are_rank_percentiles_and_each_is_spread_evenly_from_its_top():
    chosen = activation_bands(VALUES, DEFAULT_BANDS, per_band=6)
    assert [band for band, _ in chosen] == list(DEFAULT_BANDS)
    # with activations 0..199, ascending rank r is activation r: 99-100 -> ranks 198-199, 95-99 -> 190-197,
    # 75-95 -> 150-189, 50-75 -> 100-149; six of each, evenly spread, highest first
    assert _activations(chosen) == [
        [199, 198],
        [197, 196, 194, 193, 191, 190],
        [189, 181, 173, 166, 158, 150],
        [149, 139, 129, 120, 110, 100],
    ]
    assert all(p.dtype == np.int64 for _, p in chosen)


def test_references_leave_after_the_cut_so_percentiles_stay_those_of_the_sample():
    top_five = np.isin(VALUES, [199, 198, 197, 196, 195])
    chosen = activation_bands(VALUES, DEFAULT_BANDS, per_band=6, exclude=top_five)
    assert _activations(chosen)[:3] == [
        [],  # the top 1 % were all references
        [194, 193, 192, 191, 190],  # fewer left than asked: all of them
        [189, 181, 173, 166, 158, 150],  # unchanged: the band's edges did not move
    ]
    assert not np.isin(np.concatenate([p for _, p in chosen]), np.flatnonzero(top_five)).any()


def test_small_samples_give_short_bands_and_ties_go_to_the_lower_position():
    chosen = activation_bands(np.arange(10.0), [(50, 75), (0, 10)], per_band=6)
    assert [p.tolist() for _, p in chosen] == [[6, 5], [0]]  # ranks 5-6 of 10; rank 0
    flat = activation_bands(np.ones(200), [(99, 100), (0, 1)], per_band=6)
    assert [p.tolist() for _, p in flat] == [[0, 1], [198, 199]]  # equal values rank by position
    with_nan = activation_bands(np.array([np.nan, 1.0, 2.0, 3.0]), [(75, 100), (0, 25)], per_band=1)
    assert [p.tolist() for _, p in with_nan] == [[3], [0]]  # NaN ranks lowest
    assert [p.tolist() for _, p in activation_bands(np.zeros(0), DEFAULT_BANDS, 6)] == [[]] * 4


def test_bands_of_higher_percentiles_never_hold_lower_activations():
    values = np.random.default_rng(1).gamma(2.0, 1.0, 997)
    bands = [(90, 100), (60, 90), (30, 60), (0, 30)]
    chosen = activation_bands(values, bands, per_band=len(values))
    members = [values[p] for _, p in chosen]
    assert sum(len(m) for m in members) == len(values)  # disjoint and covering
    assert all(a.min() >= b.max() for a, b in zip(members, members[1:], strict=False))
    assert all(np.all(np.diff(m) <= 0) for m in members)  # descending inside each band


def test_bad_bands_are_refused():
    assert check_bands([[99, 100], [50, 75]]) == ((99.0, 100.0), (50.0, 75.0))
    for bad in ([(75, 50)], [(-1, 10)], [(90, 101)], [(1, 2, 3)], [], ["ab"]):
        with pytest.raises(ValueError):
            check_bands(bad)
    with pytest.raises(ValueError, match="exclude"):
        activation_bands(np.zeros(3), DEFAULT_BANDS, 6, exclude=np.zeros(2, bool))
