"""The app's data layer: live re-clustering matches VirtualNeurons, clusters are numbered by size, stores are
read only."""

import numpy as np

from app import data
from pure_core.virtual import VirtualNeurons
from store import list_runs


def _run(root, name="small"):
    return data.run_ref(next(r for r in list_runs(root) if r.directory.name == name))


def test_virtual_neurons_are_numbered_by_size_and_match_kmeans():
    rng = np.random.default_rng(0)
    vectors = np.concatenate(
        [rng.normal(0, 0.1, (3, 5)), rng.normal(5, 0.1, (9, 5)), rng.normal(-5, 0.1, (6, 5))]
    )
    labels, centers = data.fit_virtual_neurons(vectors, 3)
    assert np.bincount(labels).tolist() == [9, 6, 3]
    reference = VirtualNeurons(3, random_state=0).fit(vectors)
    assert sorted(map(tuple, np.round(centers, 6))) == sorted(
        map(tuple, np.round(reference.cluster_centers_, 6))
    )


def test_clustering_of_a_stored_neuron(small_runs_root):
    run = _run(small_runs_root)
    result = data.clustering(run, 20, 2, "pure")
    assert result.sizes.tolist() == [12, 12] and result.centers.shape == (2, 64)
    assert np.all(np.isfinite(result.rho_intra)) and result.evaluation[1] > result.evaluation[0]
    pure = data.neuron_data(run, 20).pure
    expected = VirtualNeurons(2, random_state=0).fit(pure).transform(pure[:1])[0]
    assert np.allclose(sorted(result.distances(pure[0])), sorted(expected), atol=1e-5)  # same centroids
    assert data.clustering(run, 41, 2, "pure") is None  # one reference cannot make two virtual neurons
    assert data.clustering(run, 999, 2, "pure") is None


def test_k_scores_rank_the_upper_bound_first(small_runs_root):
    scores = data.k_scores(_run(small_runs_root), 7, 3).set_index("method")["rho_inter - rho_intra"]
    assert scores[data.METHOD_LABELS["embedding"]] >= scores[data.METHOD_LABELS["activation"]]
    assert scores[data.METHOD_LABELS["unclustered"]] == 0.0


def test_lower_layer_run_is_found_by_model_and_layer(small_runs_root):
    lower = data.lower_layer_run(str(small_runs_root), _run(small_runs_root))
    assert lower is not None and lower.name == "small-lower"
    assert data.lower_layer_run(str(small_runs_root), _run(small_runs_root, "small-lower")) is None


def test_reading_never_writes_to_the_store(small_runs_root):
    store_dir = small_runs_root / "small"
    before = {p.name: p.stat().st_mtime_ns for p in store_dir.iterdir()}
    run = _run(small_runs_root)
    data.reference_sheet(run, 3, 2, "pure", 0)
    data.thumbnail_strips(run, [3, 7])
    assert {p.name: p.stat().st_mtime_ns for p in store_dir.iterdir()} == before
