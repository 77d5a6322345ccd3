"""Reference quantiles: which images to show from below a neuron's top references.

A neuron's references are its top-n_ref images; whether a virtual neuron still describes what the neuron does
at lower activations needs images from there. `probe_indices` draws a fixed random sample S of the dataset
(the probe set), and `activation_bands` picks, per neuron, a few images of S from each activation band:

- a band ``(lo, hi)`` is a range of percentiles of the neuron's activation over S, read by rank: with S
  sorted by ascending activation (ties: lower position first), the band holds the images at ascending ranks
  ``floor(lo / 100 * n) <= r < floor(hi / 100 * n)`` (``hi = 100`` reaches the top). Bands are disjoint and
  a band of higher percentiles never holds a lower activation than one below it;
- images in ``exclude`` (the neuron's top references) are dropped from a band after the band is cut, so the
  percentiles stay those of the sample, and a band may come out short or empty;
- of the rest, ``per_band`` images evenly spread over the band in descending activation order (its highest
  and its lowest image included), or all of them when the band holds fewer.

Plain numpy, deterministic, no model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_BANDS", "activation_bands", "check_bands", "even_spread", "probe_indices"]

DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((99.0, 100.0), (95.0, 99.0), (75.0, 95.0), (50.0, 75.0))


def check_bands(bands: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """``bands`` as ``((lo, hi), ...)`` floats; ValueError unless each has ``0 <= lo < hi <= 100``."""
    out = []
    for band in bands:
        if isinstance(band, str | bytes) or len(band) != 2:
            raise ValueError(f"a band is a pair of percentiles (lo, hi), got {band!r}")
        lo, hi = (float(v) for v in band)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"a band needs 0 <= lo < hi <= 100, got ({lo:g}, {hi:g})")
        out.append((lo, hi))
    if not out:
        raise ValueError("no bands given")
    return tuple(out)


def probe_indices(n_images: int, probe_images: int, seed: int) -> np.ndarray:
    """The probe set: ``min(probe_images, n_images)`` dataset indices drawn without replacement by
    ``numpy.random.default_rng(seed)``, ascending ``(S,)`` int64 (all images when there are fewer)."""
    n_images, probe_images = int(n_images), int(probe_images)
    if probe_images >= n_images:
        return np.arange(n_images, dtype=np.int64)
    chosen = np.random.default_rng(seed).permutation(n_images)[:max(0, probe_images)]
    return np.sort(chosen).astype(np.int64)


def even_spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` positions of ``range(n)`` evenly spread, first and last included (all when n <= k)."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k == 1:
        return np.zeros(1, np.int64)
    # steps of (n - 1) / (k - 1) > 1 rounded half up: strictly increasing, so no position twice
    return np.floor(np.linspace(0, n - 1, k) + 0.5).astype(np.int64)


def activation_bands(values: np.ndarray, bands: Sequence[Sequence[float]], per_band: int,
                     exclude: np.ndarray | None = None) -> list[tuple[tuple[float, float], np.ndarray]]:
    """Per band of ``bands``, ``(band, positions)``: positions into ``values`` of at most ``per_band`` images
    of that activation band, in descending activation order (see the module's docstring for the rule).

    ``values (n,)``: the neuron's max-pooled activation of each probe image (NaN ranks lowest); ``exclude
    (n,)`` bool: images never chosen (the neuron's references). Positions are int64.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(values)
    excluded = np.zeros(n, bool) if exclude is None else np.asarray(exclude, dtype=bool).reshape(-1)
    if len(excluded) != n:
        raise ValueError(f"exclude has {len(excluded)} entries for {n} values")
    if per_band < 0:
        raise ValueError(f"per_band must be >= 0, got {per_band}")
    key = np.where(np.isnan(values), -np.inf, values)
    ascending = np.lexsort((-np.arange(n), key))  # ascending activation; ties: lower position ranks higher
    out = []
    for lo, hi in check_bands(bands):
        start, stop = int(np.floor(lo / 100.0 * n)), n if hi >= 100.0 else int(np.floor(hi / 100.0 * n))
        members = ascending[start:stop][::-1]  # descending activation
        members = members[~excluded[members]]
        out.append(((lo, hi), members[even_spread(len(members), per_band)].astype(np.int64)))
    return out
