"""The app's virtual neurons: VirtualNeurons with the run's seed (stored PURE centroids reused through its
predict), clusters numbered by size, and the per-k scores table."""

import numpy as np

from app import analysis, store_access
from pure_core.virtual import VirtualNeurons
from store import list_runs


def _run(root, name="small"):
    return store_access.run_ref(next(r for r in list_runs(root) if r.directory.name == name))


def _blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate(
        [rng.normal(0, 0.1, (3, 5)), rng.normal(5, 0.1, (9, 5)), rng.normal(-5, 0.1, (6, 5))]
    )


def test_virtual_neurons_are_numbered_by_size_and_match_kmeans_with_the_seed():
    vectors = _blobs()
    model = analysis.fit_virtual_neurons(vectors, 3, seed=4)
    assert np.bincount(model.labels_).tolist() == [9, 6, 3] and model.random_state == 4
    reference = VirtualNeurons(3, random_state=4).fit(vectors)
    assert sorted(map(tuple, np.round(model.cluster_centers_, 6))) == sorted(
        map(tuple, np.round(reference.cluster_centers_, 6))
    )
    assert np.array_equal(model.predict(vectors), model.labels_)  # renumbered centroids and labels agree


def test_stored_centroids_assign_through_predict_and_are_renumbered():
    vectors = _blobs()
    fitted = VirtualNeurons(3, random_state=0).fit(vectors)
    model = VirtualNeurons.from_stored(fitted.cluster_centers_.astype(np.float32), vectors, random_state=0)
    assert np.bincount(model.labels_).tolist() == [9, 6, 3]
    assert model.predict(vectors[3:4]).tolist() == [0]  # a member of the biggest blob: VN 1
    assert np.argmin(model.transform(vectors[:1])[0]) == 2  # the smallest blob: VN 3


def test_clustering_of_a_stored_neuron(small_runs_root):
    run = _run(small_runs_root)
    result = analysis.clustering(run, 20, 2, "pure")
    assert result.sizes.tolist() == [12, 12] and result.centers.shape == (2, 64)
    assert np.all(np.isfinite(result.rho_intra)) and result.evaluation[1] > result.evaluation[0]
    pure = store_access.neuron_data(run, 20).pure
    expected = VirtualNeurons(2, random_state=0).fit(pure).transform(pure[:1])[0]
    assert np.allclose(sorted(result.distances(pure[0])), sorted(expected), atol=1e-5)  # same centroids
    assert result.assign(pure[0]) == result.labels[0]
    assert analysis.clustering(run, 41, 2, "pure") is None  # one reference cannot make two virtual neurons
    assert analysis.clustering(run, 999, 2, "pure") is None


def test_live_kmeans_uses_the_runs_seed(small_runs_root, monkeypatch):
    run = _run(small_runs_root)
    seeds = []
    real = analysis.fit_virtual_neurons

    def spy(vectors, k, seed):
        seeds.append(seed)
        return real(vectors, k, seed)

    monkeypatch.setattr(analysis, "fit_virtual_neurons", spy)
    analysis.clustering.clear()
    analysis.clustering(run, 7, 3, "activation")
    assert seeds == [store_access.run_details(run).meta.seed]


def test_k_scores_rank_the_upper_bound_first(small_runs_root):
    scores = analysis.k_scores(_run(small_runs_root), 7, 3).set_index("method")["rho_inter - rho_intra"]
    assert scores[analysis.METHOD_LABELS["embedding"]] >= scores[analysis.METHOD_LABELS["activation"]]
    assert scores[analysis.METHOD_LABELS["unclustered"]] == 0.0
