"""The depth profile: PURE's split with circuits taken at several lower layers, checked against the
definitions (pure_attributions per layer, k-means with the seed, Eq. 5, ARI) and on a planted case where
only the deeper layer keeps two routes apart."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, silhouette_score
from torch import nn

from pure_core.attribution import pure_attributions
from pure_core.depth import circuits_at_layers, depth_profile
from pure_core.scores import cluster_distances
from pure_core.virtual import VirtualNeurons


def test_circuits_at_layers_are_pure_attributions_at_each_layer():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(6, 5, 3, padding=1),
        relu2=nn.ReLU(), conv3=nn.Conv2d(5, 4, 3, padding=1), relu3=nn.ReLU())).eval()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    neurons = [0, 3, 1, 1, 2]
    batches = [(x[i:i + 2], neurons[i:i + 2]) for i in range(0, len(x), 2)]
    got = circuits_at_layers(net, batches, "relu3", ["relu2", "relu1"])
    for lower in ("relu2", "relu1"):
        full = pure_attributions(net, x, "relu3", lower, sorted(set(neurons))).numpy()
        expected = np.stack([full[i, sorted(set(neurons)).index(n)] for i, n in enumerate(neurons)])
        np.testing.assert_allclose(got[lower], expected, atol=1e-5)


def test_profile_is_kmeans_eq5_silhouette_and_ari_per_layer():
    rng = np.random.default_rng(0)
    concepts = ["a"] * 10 + ["b"] * 10
    routes = np.eye(4)[:2]
    deep = np.concatenate([rng.normal(0, 0.1, (10, 4)) + routes[0], rng.normal(0, 0.1, (10, 4)) + routes[1]])
    shallow = rng.normal(0, 1.0, (20, 4))  # the routes merged: no structure
    embeddings = np.concatenate([rng.normal(0, 0.2, (10, 3)), rng.normal(3, 0.2, (10, 3))])
    profile = depth_profile({"block3": shallow, "block2": deep}, embeddings, concepts, k=2, random_state=3)
    assert profile.layers == ("block3", "block2")
    for i, R in enumerate((shallow, deep)):
        labels = VirtualNeurons(n_clusters=2, random_state=3).fit(R).labels_
        intra, inter = cluster_distances(embeddings, labels)
        assert profile.rho_gap[i] == pytest.approx(inter - intra)
        assert profile.silhouette[i] == pytest.approx(silhouette_score(R, labels))
        assert profile.ari[i] == pytest.approx(adjusted_rand_score(concepts, labels))
    assert profile.ari[1] == pytest.approx(1.0) and profile.ari[0] < 0.5
    assert profile.best_layer == "block2"


def test_profile_without_embeddings_or_truth_is_nan_there():
    R = np.random.default_rng(1).normal(size=(6, 3))
    profile = depth_profile({"x": R, "y": R[:1]}, k=2)
    assert np.isnan(profile.rho_gap).all() and np.isnan(profile.ari).all()
    assert not np.isnan(profile.silhouette[0]) and np.isnan(profile.silhouette[1])  # 1 reference: no split
    assert profile.best_layer is None
