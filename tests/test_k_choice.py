"""k diagnostics: silhouette, stability over k-means seeds, the embedding score per k and the suggested k."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from pure_core.k_choice import k_diagnostics, split_stability, suggest_k
from pure_core.scores import cluster_distances
from pure_core.virtual import VirtualNeurons


def _circuits(n_circuits: int, n: int = 90, d: int = 16, spread: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(n_circuits, d))
    return np.concatenate([c + rng.normal(0, spread, size=(n // n_circuits, d)) for c in centres])


def test_silhouette_and_score_are_sklearns_and_eq5_on_the_seeded_split():
    R = _circuits(3)
    embeddings = np.random.default_rng(1).normal(size=(len(R), 5))
    result = k_diagnostics(R, [2, 3, 4], embeddings, random_state=4)
    for i, k in enumerate([2, 3, 4]):
        split = VirtualNeurons(n_clusters=k, random_state=4).fit(R).labels_
        assert result.silhouette[i] == pytest.approx(silhouette_score(R, split))
        intra, inter = cluster_distances(embeddings, split)
        assert result.score[i] == pytest.approx(inter - intra)


def test_stability_is_the_mean_ari_between_seeds():
    R = _circuits(4, spread=2.5)
    splits = [VirtualNeurons(n_clusters=3, random_state=10 + s, n_init=1).fit(R).labels_ for s in range(3)]
    expected = np.mean([adjusted_rand_score(splits[a], splits[b]) for a, b in ((0, 1), (0, 2), (1, 2))])
    assert split_stability(R, 3, n_seeds=3, random_state=10) == pytest.approx(expected)


@pytest.mark.parametrize("n_circuits", [2, 3, 4])
def test_planted_circuits_suggest_their_number(n_circuits):
    result = k_diagnostics(_circuits(n_circuits), [2, 3, 4, 5, 6])
    assert result.suggested_k == n_circuits
    assert result.stability[result.ks.index(n_circuits)] == pytest.approx(1.0)


def test_one_blob_has_no_stable_split_and_suggests_one():
    R = np.random.default_rng(0).normal(size=(100, 16))
    result = k_diagnostics(R, [2, 3, 4, 5])
    assert np.all(result.stability < 0.8)
    assert result.suggested_k == 1


def test_suggest_k_rule_by_hand():
    assert suggest_k([2, 3, 4], [0.5, 0.7, 0.9], [0.95, 0.9, 0.4]) == 3  # 4 is unstable
    assert suggest_k([2, 3], [0.5, 0.5], [0.9, 0.9]) == 2  # ties go to the smaller k
    assert suggest_k([2, 3], [0.5, 0.6], [0.5, 0.7]) == 1
    assert suggest_k([2, 3], [np.nan, 0.1], [1.0, 1.0]) == 3


def test_ks_beyond_the_references_are_nan_and_given_splits_are_used():
    R = _circuits(2, n=10)
    result = k_diagnostics(R, [2, 10, 12])
    assert not np.isnan(result.silhouette[0]) and np.isnan(result.silhouette[1:]).all()
    assert np.isnan(result.score).all()  # no embeddings
    given = np.arange(10) % 2
    forced = k_diagnostics(R, [2], labels={2: given})
    assert forced.silhouette[0] == pytest.approx(silhouette_score(R, given))
