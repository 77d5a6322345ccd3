"""VirtualNeurons: k-means on attribution vectors with scikit-learn's estimator conventions."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError

from pure_core.virtual import VirtualNeurons


def _blobs(seed=0, n=30, d=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(3, d))
    return np.concatenate([c + rng.normal(0, 1, size=(n, d)) for c in centres])


def test_fit_matches_sklearn_kmeans_for_the_same_seed():
    R = _blobs()
    vn = VirtualNeurons(n_clusters=3, random_state=7).fit(R)
    km = KMeans(n_clusters=3, random_state=7, n_init=10).fit(R)
    np.testing.assert_allclose(vn.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(vn.labels_, km.labels_)
    assert vn.inertia_ == pytest.approx(km.inertia_)
    assert vn.n_features_in_ == R.shape[1]


def test_fit_returns_self_and_keeps_hyper_parameters_unchanged():
    vn = VirtualNeurons(n_clusters=2, random_state=3, n_init=4)
    assert vn.fit(_blobs()) is vn
    assert vn.get_params() == {"n_clusters": 2, "random_state": 3, "n_init": 4, "radius_quantile": 0.95}


def test_transform_is_the_distance_to_each_centroid_and_predict_its_argmin():
    R = _blobs()
    vn = VirtualNeurons(n_clusters=3).fit(R)
    new = np.random.default_rng(1).normal(0, 5, size=(10, R.shape[1]))
    expected = np.linalg.norm(new[:, None, :] - vn.cluster_centers_[None], axis=2)
    np.testing.assert_allclose(vn.transform(new), expected)
    np.testing.assert_array_equal(vn.predict(new), expected.argmin(axis=1))
    np.testing.assert_array_equal(vn.predict(R), vn.labels_)


def test_fit_is_deterministic_for_a_seed():
    R = _blobs(seed=2)
    a, b = VirtualNeurons(4, random_state=0).fit(R), VirtualNeurons(4, random_state=0).fit(R)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_predict_and_transform_refuse_to_run_before_fit():
    with pytest.raises(NotFittedError):
        VirtualNeurons().predict(_blobs())
    with pytest.raises(NotFittedError):
        VirtualNeurons().transform(_blobs())


def test_a_different_feature_count_is_a_clear_error():
    vn = VirtualNeurons().fit(_blobs(d=8))
    with pytest.raises(ValueError, match="5 features.*expecting 8"):
        vn.predict(np.zeros((2, 5)))


def test_more_clusters_than_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="n_clusters=4.*n_samples=3"):
        VirtualNeurons(n_clusters=4).fit(np.eye(3))


def test_one_cluster_has_the_mean_as_its_centroid():
    R = _blobs()
    vn = VirtualNeurons(n_clusters=1).fit(R)
    np.testing.assert_allclose(vn.cluster_centers_[0], R.mean(axis=0))
    assert set(vn.labels_) == {0}


def test_float16_input_is_accepted_and_promoted():
    R = _blobs().astype(np.float16)
    vn = VirtualNeurons().fit(R)
    assert vn.cluster_centers_.dtype == np.float64
    assert vn.transform(R).dtype == np.float64
    np.testing.assert_array_equal(vn.predict(R), vn.labels_)


def test_recovers_two_planted_circuits():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(20, 6)) + np.array([1, 0, 0, 0, 0, 0])
    b = rng.normal(0, 0.1, size=(20, 6)) + np.array([0, 0, 0, 0, 0, 1])
    labels = VirtualNeurons().fit_predict(np.concatenate([a, b]))
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_passes_scikit_learns_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(VirtualNeurons(n_init=2), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed


def test_virtual_neurons_from_stored_centroids_predict_like_the_fitted_ones():
    rng = np.random.default_rng(5)
    R = np.vstack([rng.normal(0, 0.1, (20, 6)), rng.normal(1, 0.1, (20, 6))])
    fitted = VirtualNeurons(n_clusters=2, random_state=0).fit(R)
    stored = fitted.cluster_centers_.astype(np.float32)  # precompute stores float32 centroids
    loaded = VirtualNeurons.from_centroids(stored, labels=fitted.labels_)
    new = rng.normal(0.5, 0.6, (15, 6))
    np.testing.assert_array_equal(loaded.predict(new), fitted.predict(new))
    np.testing.assert_allclose(loaded.transform(new), fitted.transform(new), rtol=1e-5)
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    assert loaded.n_clusters == 2 and loaded.n_features_in_ == 6
    with pytest.raises(ValueError, match="6 features"):
        loaded.predict(np.zeros((1, 5)))


def test_radii_are_the_quantile_of_each_clusters_own_distances_by_hand():
    R = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0], [10.0, 13.0]])
    stored = VirtualNeurons.from_stored([[0.0, 0.0], [10.0, 10.0]], R)  # distances (0, 1, 2) and (0, 3)
    np.testing.assert_allclose(stored.radii_, [np.quantile([0, 1, 2], 0.95), np.quantile([0, 3], 0.95)])
    fitted = VirtualNeurons(n_clusters=2, radius_quantile=0.5).fit(R)
    own = np.linalg.norm(R - fitted.cluster_centers_[fitted.labels_], axis=1)
    expected = [np.median(own[fitted.labels_ == c]) for c in range(2)]
    np.testing.assert_allclose(fitted.radii_, expected)


def test_unlike_any_circuit_needs_to_be_beyond_every_radius():
    R = _blobs()
    vn = VirtualNeurons(n_clusters=3, random_state=0).fit(R)
    own = np.linalg.norm(R - vn.cluster_centers_[vn.labels_], axis=1)
    # the blobs lie far apart, so a reference is flagged exactly when it lies beyond its own radius: the
    # 2 farthest of each 30 (the 0.95 quantile interpolates between the 28th and 29th distances)
    np.testing.assert_array_equal(vn.unlike_any_circuit(R), own > vn.radii_[vn.labels_])
    assert vn.unlike_any_circuit(R).sum() == 6
    far = R.mean(axis=0) + 100.0
    ratio = vn.radius_ratio(far[None])[0]
    expected = min(np.linalg.norm(far - c) / r for c, r in zip(vn.cluster_centers_, vn.radii_, strict=True))
    assert ratio == pytest.approx(expected) and ratio > 1
    assert vn.unlike_any_circuit(far[None])[0]
    # a point just outside one radius but inside another is not unlike every circuit
    centre, radius = vn.cluster_centers_[0], vn.radii_[0]
    direction = np.zeros(R.shape[1])
    direction[0] = 1.0
    near = centre + 0.5 * radius * direction
    assert not vn.unlike_any_circuit(near[None])[0]


def test_radii_follow_the_numbering_by_size_and_the_stored_split():
    R = _blobs(n=20)
    R = np.concatenate([R[:20], R[20:40][:5], R[40:]])  # cluster sizes 20, 5, 20
    fitted = VirtualNeurons(n_clusters=3, random_state=1).fit(R)
    numbered = fitted.numbered_by_size()
    own = np.linalg.norm(R - numbered.cluster_centers_[numbered.labels_], axis=1)
    expected = [np.quantile(own[numbered.labels_ == c], 0.95) for c in range(3)]
    np.testing.assert_allclose(numbered.radii_, expected)
    assert np.bincount(numbered.labels_).tolist() == [20, 20, 5]
    stored = VirtualNeurons.from_stored(fitted.cluster_centers_, R, random_state=1)
    np.testing.assert_allclose(stored.radii_, numbered.radii_)
    with pytest.raises(NotFittedError):
        VirtualNeurons.from_centroids(fitted.cluster_centers_).radius_ratio(R)
