"""Scores: Eq. 4/5 distances, polysemanticity, clustering evaluation, distance correlation."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr

from pure_core.scores import (
    ClusterEvaluation,
    cluster_distances,
    distance_correlation,
    evaluate_clustering,
    evaluate_methods,
    overall_distance,
    pairwise_distances,
    per_neuron_distance_correlation,
    polysemanticity,
)

# Four points on a line: 0, 1 | 5, 7.
LINE = np.array([[0.0], [1.0], [5.0], [7.0]])


def test_pairwise_distances_are_euclidean():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    np.testing.assert_allclose(pairwise_distances(x), [[0, 5, 10], [5, 0, 5], [10, 5, 0]])


def test_eq5_on_a_hand_computed_case():
    # intra pairs: |0-1| = 1, |5-7| = 2 -> 1.5; inter pairs: 5, 7, 4, 6 -> 5.5
    rho_intra, rho_inter = cluster_distances(LINE, [0, 0, 1, 1])
    assert rho_intra == pytest.approx(1.5)
    assert rho_inter == pytest.approx(5.5)
    assert overall_distance(LINE) == pytest.approx(25 / 6)


def test_singleton_clusters_contribute_no_intra_pairs():
    # only (5, 7) is an intra pair; the other five pairs are inter: (1 + 5 + 7 + 4 + 6) / 5
    assert cluster_distances(LINE, [0, 1, 2, 2]) == pytest.approx((2.0, 4.6))
    # no cluster with two members: intra = 0 by convention, inter = all pairs
    assert cluster_distances(LINE, [0, 1, 2, 3]) == pytest.approx((0.0, 25 / 6))


def test_a_single_cluster_has_inter_equal_to_intra():
    rho_intra, rho_inter = cluster_distances(LINE, [3, 3, 3, 3])
    assert rho_intra == rho_inter == pytest.approx(25 / 6)


def test_evaluate_clustering_names_the_two_distances():
    result = evaluate_clustering(LINE, np.array([0, 0, 1, 1]))
    assert isinstance(result, ClusterEvaluation)
    assert result.rho_intra == pytest.approx(1.5) and result.rho_inter == pytest.approx(5.5)


def test_labels_must_match_the_embeddings():
    with pytest.raises(ValueError, match="labels"):
        cluster_distances(LINE, [0, 1])


def test_two_separated_blobs_are_more_polysemantic_than_one():
    rng = np.random.default_rng(0)
    one_blob = rng.normal(0, 1, size=(40, 16))
    two_blobs = np.concatenate([rng.normal(0, 1, size=(20, 16)), rng.normal(6, 1, size=(20, 16))])
    mono, poly = polysemanticity(one_blob), polysemanticity(two_blobs)
    assert poly.score > mono.score + 3
    assert poly.score == pytest.approx(poly.rho_inter - poly.rho_intra)
    assert poly.overall == pytest.approx(overall_distance(two_blobs))
    assert poly.labels.shape == (40,)
    assert len(set(poly.labels[:20])) == 1 and poly.labels[0] != poly.labels[-1]


def test_polysemanticity_is_deterministic_for_a_seed():
    x = np.random.default_rng(3).normal(size=(30, 5))
    a, b = polysemanticity(x, random_state=1), polysemanticity(x, random_state=1)
    assert a.score == b.score
    np.testing.assert_array_equal(a.labels, b.labels)


def test_evaluate_methods_picks_up_a_planted_separation():
    rng = np.random.default_rng(0)
    concept = np.repeat([0, 1], 25)
    embeddings = rng.normal(0, 1, size=(50, 32)) + 5 * concept[:, None]
    vectors = {
        "pure": rng.normal(0, 0.3, size=(50, 10)) + 3 * concept[:, None],  # follows the concepts
        "activation": rng.normal(0, 1, size=(50, 10)),  # blind to them
    }
    result = evaluate_methods(embeddings, vectors, ks=(2, 3))
    assert set(result) == {"pure", "activation"} and set(result["pure"]) == {2, 3}
    pure, act = result["pure"][2], result["activation"][2]
    assert pure.rho_inter - pure.rho_intra > 3
    assert act.rho_inter - act.rho_intra < 1
    assert pure.rho_intra < act.rho_intra
    # k=2 on "pure" recovers the concepts, so it equals the ground-truth evaluation
    assert pure == pytest.approx(evaluate_clustering(embeddings, concept))


def test_evaluate_methods_refuses_vectors_for_other_references():
    with pytest.raises(ValueError, match="3 vectors"):
        evaluate_methods(np.zeros((4, 2)), {"pure": np.zeros((3, 2))})


def test_distance_correlation_of_identical_inputs_is_one():
    rng = np.random.default_rng(0)
    neurons = [rng.normal(size=(20, 8)) for _ in range(40)]
    result = distance_correlation(neurons, neurons)
    assert result.r == pytest.approx(1.0)
    assert result.sem == pytest.approx(0.0, abs=1e-9)


def test_distance_correlation_of_independent_inputs_is_near_zero():
    rng = np.random.default_rng(1)
    a = [rng.normal(size=(30, 16)) for _ in range(60)]
    b = [rng.normal(size=(30, 4)) for _ in range(60)]
    result = distance_correlation(a, b)
    assert abs(result.r) < 0.05
    assert 0 < result.sem < 0.05


def test_distance_correlation_pools_pairs_over_neurons_like_pearsonr():
    rng = np.random.default_rng(2)
    ref = [rng.normal(size=(n, 5)) for n in (6, 8, 7)]
    other = [r[:, :3] + rng.normal(0, 0.5, size=(len(r), 3)) for r in ref]
    other[1][3] = other[1][2]  # a zero distance on one side: that pair is dropped
    d_ref = np.concatenate([pdist(r) for r in ref])
    d_oth = np.concatenate([pdist(o) for o in other])
    keep = d_ref * d_oth != 0
    assert keep.sum() == keep.size - 1
    expected = pearsonr(d_ref[keep], d_oth[keep]).statistic
    result = distance_correlation(ref, other, n_subsets=5)  # fewer neurons than subsets: pairs are split
    assert result.r == pytest.approx(expected)
    assert np.isfinite(result.sem) and result.sem > 0


def test_distance_correlation_uses_only_the_top_references():
    rng = np.random.default_rng(3)
    ref = [rng.normal(size=(10, 4)) for _ in range(5)]
    other = [r + rng.normal(0, 0.1, size=r.shape) for r in ref]
    noisy = [np.concatenate([o, rng.normal(0, 50, size=(5, 4))]) for o in other]
    padded = [np.concatenate([r, rng.normal(size=(5, 4))]) for r in ref]
    assert distance_correlation(padded, noisy, n_top=10).r == pytest.approx(
        distance_correlation(ref, other, n_top=10).r
    )


def test_distance_correlation_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    a = [rng.normal(size=(12, 3)) for _ in range(35)]
    b = [x + rng.normal(size=x.shape) for x in a]
    assert distance_correlation(a, b, random_state=5) == distance_correlation(a, b, random_state=5)


def test_per_neuron_distance_correlation_matches_pearsonr():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(15, 6))
    other = ref @ rng.normal(size=(6, 3)) + rng.normal(0, 0.5, size=(15, 3))
    expected = pearsonr(pdist(ref), pdist(other)).statistic
    assert per_neuron_distance_correlation(ref, other) == pytest.approx(expected)
    assert per_neuron_distance_correlation(ref, ref) == pytest.approx(1.0)


def test_mismatched_neurons_are_refused():
    with pytest.raises(ValueError, match="rows"):
        distance_correlation([np.zeros((4, 2))], [np.zeros((5, 2))])
    with pytest.raises(ValueError, match="neurons"):
        distance_correlation([np.zeros((4, 2))], [])


def test_distance_correlation_sem_is_the_standard_error_over_random_neuron_subsets():
    rng = np.random.default_rng(6)
    a = [rng.normal(size=(10, 4)) for _ in range(12)]
    b = [x + rng.normal(0, 1, size=x.shape) for x in a]
    result = distance_correlation(a, b, n_subsets=4, random_state=9)
    group_of_neuron = np.random.default_rng(9).permutation(12) % 4  # the documented partition
    r_groups = [
        pearsonr(
            np.concatenate([pdist(a[i]) for i in np.flatnonzero(group_of_neuron == g)]),
            np.concatenate([pdist(b[i]) for i in np.flatnonzero(group_of_neuron == g)]),
        ).statistic
        for g in range(4)
    ]
    assert result.sem == pytest.approx(np.std(r_groups, ddof=1) / 2)


def test_fit_methods_and_evaluate_fits_are_evaluate_methods_in_two_steps():
    """precompute keeps the fits (PURE's are the virtual neurons) and scores exactly as evaluate_methods."""
    from pure_core.scores import evaluate_fits, fit_methods

    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(30, 8))
    vectors = {"pure": rng.normal(size=(30, 5)), "embedding": embeddings}
    fits = fit_methods(vectors, ks=(2, 4), random_state=7)
    assert fits["pure"][4].cluster_centers_.shape == (4, 5)
    assert evaluate_fits(embeddings, fits) == evaluate_methods(embeddings, vectors, ks=(2, 4), random_state=7)
    # the embedding's k=2 fit is the polysemanticity clustering
    np.testing.assert_array_equal(fits["embedding"][2].labels_, polysemanticity(embeddings, 7).labels)


def test_fewer_than_two_distinct_embeddings_have_nothing_to_split():
    """A neuron with one reference, or references that all embed alike, scores 0 (the module's convention)."""
    for embeddings in (np.ones((1, 4)), np.ones((5, 4))):
        result = polysemanticity(embeddings)
        assert (result.score, result.rho_intra, result.rho_inter, result.overall) == (0.0, 0.0, 0.0, 0.0)
        np.testing.assert_array_equal(result.labels, np.zeros(len(embeddings), dtype=np.int64))
