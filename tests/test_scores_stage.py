"""The scores stage's per-neuron work gives the same values in worker processes as in the serial loop, and
uses processes only where there are enough neurons to pay for them."""

from __future__ import annotations

import os

import numpy as np
from joblib import Parallel, delayed

from precompute.config import UmapConfig
from precompute.stages.scores import MIN_NEURONS_PER_PROCESS, NeuronInputs, score_neuron, score_processes


def _inputs(seed: int) -> NeuronInputs:
    rng = np.random.default_rng(seed)
    split = (rng.random(24) < 0.5).astype(int)
    vectors = [rng.normal(size=(2, d))[split] + 0.3 * rng.normal(size=(24, d)) for d in (8, 12, 16)]
    return NeuronInputs(*vectors, truth=None, labels=rng.integers(0, 4, size=24),
                        data_labels=rng.integers(-1, 3, size=24))


def test_worker_processes_give_the_serial_values():
    inputs = [_inputs(seed) for seed in range(4)]
    args = ([2, 3], 0, UmapConfig())
    serial = [score_neuron(x, *args) for x in inputs]
    with Parallel(n_jobs=2, backend="loky") as parallel:
        parallel_results = parallel(delayed(score_neuron)(x, *args) for x in inputs)
    for ours, theirs in zip(serial, parallel_results, strict=True):
        assert len(ours.records()) == 6  # scores, coordinates, k choice, predicted, dataset and VN labels
        assert all(a == b for a, b in zip(ours.records(), theirs.records(), strict=True))
    # the comparison can tell neurons apart
    assert all(a != b for a, b in zip(serial[0].records(), serial[1].records(), strict=True))


def test_processes_only_where_enough_neurons():
    assert score_processes(8) == 1  # the demo: a worker would cost more than it saves
    assert score_processes(MIN_NEURONS_PER_PROCESS * 2, processes_per_node=10**6) == 1  # cores taken by ranks
    assert score_processes(10**6) == (os.cpu_count() or 1)


def test_k_choice_is_pure_core_k_diagnostics_on_the_neurons_vectors():
    from pure_core.k_choice import k_diagnostics

    inputs = _inputs(3)
    result = score_neuron(inputs, [2, 3, 4], 5, UmapConfig())
    expected = k_diagnostics(inputs.pure, [2, 3, 4], inputs.embeddings, random_state=5)
    choice = result.k_choice
    assert choice.ks == (2, 3, 4) and choice.suggested_k == expected.suggested_k
    for name in ("silhouette", "stability", "score"):
        np.testing.assert_allclose(getattr(choice, name), getattr(expected, name).astype(np.float32))
    assert choice.suggested_k == 2  # the inputs hold two planted groups
