"""Streaming reference selection equals a brute-force ranking of the whole dataset; hooks never leak."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from pure_core.activations import References, TopReferences, capture, collect_references, pooled_activations
from pure_core.models import UnknownLayerError


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(), pool=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 8, 3, padding=1), relu2=nn.ReLU(),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)),
    ))
    with torch.no_grad():
        net.conv2.bias[0] = -1e3  # a dead channel: every image ties at 0, so ties go by dataset index
    return net.double().eval()


@pytest.fixture(scope="module")
def dataset() -> torch.Tensor:
    return torch.randn(50, 3, 12, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _batches(data: torch.Tensor, size: int = 7, labelled: bool = True):
    for start in range(0, len(data), size):
        x = data[start:start + size]
        yield (x, torch.zeros(len(x))) if labelled and start % 2 else x


def _brute_force(net: nn.Module, data: torch.Tensor, n_ref: int):
    """Rank every image of the dataset at once with numpy: (indices, values, positions, mean vectors)."""
    with torch.no_grad():
        maps = net[:5](data).numpy()  # relu2 output (B, C, H, W)
    b, c, h, w = maps.shape
    flat = maps.reshape(b, c, h * w)
    values, argmax = flat.max(axis=2), flat.argmax(axis=2)  # argmax: first maximum
    order = np.stack([np.lexsort((np.arange(b), -values[:, k]))[:n_ref] for k in range(c)])  # (C, n_ref)
    top_values = np.take_along_axis(values.T, order, 1)
    top_flat = np.take_along_axis(argmax.T, order, 1)
    positions = np.stack([top_flat // w, top_flat % w], axis=-1)
    means = np.maximum(maps, 0).mean(axis=(2, 3))
    return order, top_values, positions, means


def test_streaming_top_n_equals_brute_force(dataset):
    net = _small_net()
    refs = collect_references(net, _batches(dataset), "relu2", n_ref=5)
    order, values, positions, means = _brute_force(net, dataset, 5)
    assert isinstance(refs, References) and refs.n_images == 50 and refs.n_ref == 5
    np.testing.assert_array_equal(refs.neurons, np.arange(8))
    np.testing.assert_array_equal(refs.indices, order)
    np.testing.assert_array_equal(refs.indices[0], np.arange(5))  # the dead channel: ties by index
    np.testing.assert_allclose(refs.max_activations, values, rtol=1e-6)
    np.testing.assert_array_equal(refs.positions, positions)
    assert refs.indices.dtype == refs.positions.dtype == np.int64
    assert refs.max_activations.dtype == refs.activation_vectors.dtype == np.float32
    # baseline vectors exactly for the images referenced (the others were pruned while streaming)
    np.testing.assert_array_equal(refs.image_indices, np.unique(order))
    np.testing.assert_allclose(refs.activation_vectors, means[refs.image_indices], rtol=1e-6)
    for row in range(8):
        np.testing.assert_allclose(refs.baseline(row), means[order[row]], rtol=1e-6)
    assert not net.relu2._forward_hooks and not net.head[2]._forward_hooks


def test_a_subset_of_neurons_and_a_progress_bar(dataset):
    net = _small_net()
    refs = collect_references(net, _batches(dataset, 16, labelled=False), "relu2", n_ref=3, neurons=[6, 2],
                              progress=True)
    order, values, _, _ = _brute_force(net, dataset, 3)
    np.testing.assert_array_equal(refs.neurons, [6, 2])
    np.testing.assert_array_equal(refs.indices, order[[6, 2]])
    np.testing.assert_allclose(refs.max_activations, values[[6, 2]], rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        collect_references(net, _batches(dataset), "relu2", n_ref=3, neurons=[8])


def test_n_ref_larger_than_the_dataset_keeps_every_image(dataset):
    net = _small_net()
    refs = collect_references(net, _batches(dataset[:4], 3), "relu2", n_ref=10)
    order, _, _, _ = _brute_force(net, dataset[:4], 10)
    assert refs.indices.shape == (8, 4) and refs.n_ref == 4
    np.testing.assert_array_equal(refs.indices, order)
    assert refs.baseline(3).shape == (4, 8)
    with pytest.raises(ValueError, match="no images"):
        collect_references(net, [], "relu2", n_ref=3)


def test_equal_activations_rank_by_dataset_index_and_nan_ranks_last():
    # identity "network": channel c of image i has maximum value[i] at pixel (1, 2)
    value = torch.tensor([1.0, 3.0, 2.0, 3.0, float("nan"), 3.0, 1.0])
    data = torch.zeros(7, 2, 3, 4)
    data[:, :, 1, 2] = value[:, None]
    net = nn.Sequential(OrderedDict(layer=nn.Identity()))
    refs = collect_references(net, [data[:2], data[2:5], data[5:]], "layer", n_ref=7)
    np.testing.assert_array_equal(refs.indices[0], [1, 3, 5, 2, 0, 6, 4])
    np.testing.assert_array_equal(refs.positions[0, :6], [[1, 2]] * 6)


def test_top_references_equal_a_full_sort_for_any_batching_and_resume_from_their_arrays():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 3)).astype(np.float32)  # (B, N), as pooled_activations returns them
    values[10, 0] = values[20, 0] = 9.0  # a tie: the lower index ranks first
    values[5, 1] = np.nan
    positions = rng.integers(0, 7, size=(50, 3, 2))
    indices = np.delete(np.arange(53), [4, 30, 31])  # increasing, with gaps (skipped unreadable images)
    results = []
    for batch in (1, 7, 50):
        top = TopReferences.empty(3, 6)
        for start in range(0, 50, batch):
            if start == 21:  # a checkpoint: the arrays alone restore the state
                top = TopReferences(6, top.values.copy(), top.indices.copy(), top.positions.copy())
            sl = slice(start, start + batch)
            top.update(values[sl], positions[sl], indices[sl])
        results.append(top)
    for top in results[1:]:
        for name in ("values", "indices", "positions"):
            np.testing.assert_array_equal(getattr(top, name), getattr(results[0], name))
    top = results[0]
    assert top.values.dtype == np.float32 and top.indices.dtype == top.positions.dtype == np.int64
    assert top.indices[0, :2].tolist() == [indices[10], indices[20]]
    assert indices[5] not in top.indices[1]
    order = np.argsort(-values[:, 2], kind="stable")[:6]
    np.testing.assert_array_equal(top.indices[2], indices[order])
    np.testing.assert_array_equal(top.values[2], values[order, 2])
    np.testing.assert_array_equal(top.positions[2], positions[order, 2])


def test_pooled_activations_are_max_argmax_and_clamped_mean(dataset):
    net = _small_net()
    x = dataset[:5]
    maximum, positions, mean = pooled_activations(net, x, "conv2")
    with torch.no_grad():
        maps = net[:4](x)
    assert maximum.shape == mean.shape == (5, 8) and positions.shape == (5, 8, 2)
    torch.testing.assert_close(maximum, maps.amax(dim=(2, 3)))
    torch.testing.assert_close(mean, maps.clamp(min=0).mean(dim=(2, 3)))
    picked = maps[torch.arange(5)[:, None], torch.arange(8)[None, :], positions[..., 0], positions[..., 1]]
    torch.testing.assert_close(picked, maximum)


def test_capture_records_outputs_and_always_removes_its_hooks(dataset):
    net = _small_net()
    x = dataset[:2]
    with torch.no_grad(), capture(net, ["conv1", "relu2"]) as outputs:
        logits = net(x)
        torch.testing.assert_close(outputs["conv1"], net.conv1(x))
        torch.testing.assert_close(outputs["relu2"], net[:5](x))
        net(x[:1])  # a second forward pass replaces the outputs
        assert outputs["relu2"].shape[0] == 1
    assert logits.shape == (2, 3)
    with pytest.raises(RuntimeError, match="boom"), capture(net, ["conv1"]):
        raise RuntimeError("boom")
    with pytest.raises(UnknownLayerError, match="conv1"), capture(net, ["conv1", "conv9"]):
        pass
    assert [name for name, m in net.named_modules() if m._forward_hooks or m._forward_pre_hooks] == []


def test_a_module_called_twice_is_taken_at_its_first_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.act(x) - 1.0)

    net = Twice()
    x = torch.randn(1, 2, 3, 3)
    with capture(net, ["act"]) as outputs:
        net(x)
    torch.testing.assert_close(outputs["act"], x.clamp(min=0))
    maximum, _, _ = pooled_activations(net, x, "act")
    torch.testing.assert_close(maximum, x.clamp(min=0).amax(dim=(2, 3)))


def test_a_reference_scan_stopped_and_resumed_from_its_arrays_equals_one_pass(dataset):
    """precompute checkpoints the running top set between chunks and resumes from its arrays."""
    from pure_core.activations import ReferenceScan

    net = _small_net()
    whole = collect_references(net, _batches(dataset, labelled=False), "relu2", n_ref=5, neurons=[1, 3, 6])
    first = ReferenceScan(net, "relu2", 5, neurons=[1, 3, 6])
    first.update(dataset[:23], np.arange(23))
    saved = TopReferences(5, first.top.values.copy(), first.top.indices.copy(), first.top.positions.copy())
    resumed = ReferenceScan(net, "relu2", 5, neurons=[1, 3, 6], top=saved)
    for start in range(23, 50, 9):
        resumed.update(dataset[start:start + 9], np.arange(start, min(50, start + 9)))
    refs = resumed.references()
    np.testing.assert_array_equal(refs.neurons, [1, 3, 6])
    np.testing.assert_array_equal(refs.indices, whole.indices)
    np.testing.assert_array_equal(refs.max_activations, whole.max_activations)
    np.testing.assert_array_equal(refs.positions, whole.positions)
    assert refs.activation_vectors.size == 0  # baseline vectors only when asked for (keep_baseline)


def test_a_reference_scan_checks_its_layer_and_n_ref_before_reading_data():
    from pure_core.activations import ReferenceScan

    with pytest.raises(UnknownLayerError):
        ReferenceScan(_small_net(), "relu9", 5)
    with pytest.raises(ValueError, match="n_ref"):
        ReferenceScan(_small_net(), "relu2", 0)


def test_top_sets_of_dataset_shards_merge_into_the_top_set_of_one_pass():
    """What distributed precompute does: each process ranks its shard; merging the shards' sets is exact."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=(40, 5)).astype(np.float32)
    values[::7] = values[0]  # ties across shards go to the lower dataset index
    positions = rng.integers(0, 4, size=(40, 5, 2))
    whole = TopReferences.empty(5, 6)
    whole.update(values, positions, np.arange(40))
    shards = [TopReferences.empty(5, 6) for _ in range(3)]
    for chunk, start in enumerate(range(0, 40, 8)):  # round-robin chunks of 8 images, as ranks take them
        batch = slice(start, start + 8)
        shards[chunk % 3].update(values[batch], positions[batch], np.arange(start, start + 8))
    merged = shards[2]
    merged.merge(shards[0])
    merged.merge(shards[1])
    np.testing.assert_array_equal(merged.indices, whole.indices)
    np.testing.assert_array_equal(merged.values, whole.values)
    np.testing.assert_array_equal(merged.positions, whole.positions)
