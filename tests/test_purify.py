"""pure_core/purify.py and `python -m precompute purify`: a purified layer computes PURE's circuits in its own
forward, routes each selected channel into the virtual channel of its nearest centroid, and leaves the
network's outputs exactly as they were; its export loads in one call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from precompute.__main__ import main as precompute_main
from pure_core.attribution import pure_attributions
from pure_core.hooks import capture
from pure_core.models import ModelSpec, UnknownLayerError, build_model, get_layer, model_fingerprint
from pure_core.purify import (
    FORMAT_VERSION,
    PurifiedExportError,
    PurifiedLayer,
    load_purified,
    purified_pass,
    purify,
    read_export,
    save_purified,
    virtual_activations,
)
from pure_core.virtual import VirtualNeurons
from store import RunStore
from store.codecs import decode_image
from store.schema import NeuronScores, PureVectors, ReferenceImage, References, RunMeta, Summary

LAYER, LOWER = "top", "stem"
CHANNELS = (1, 4, 7)
KS = {1: 2, 4: 3, 7: 1}


class TinyNet(nn.Module):
    """stem (conv, batch norm; an in-place ReLU after it) -> block -> top (layer L) -> conv, linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.act = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.top = nn.Sequential(nn.Conv2d(8, 10, 3, padding=1), nn.ReLU())
        self.after = nn.Conv2d(10, 4, 1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.top(self.block(self.act(self.stem(x))))
        return self.fc(self.after(maps).mean(dim=(2, 3)))


def tiny_net(channels_last: bool = False) -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    net.stem[1].running_mean.normal_()
    net.stem[1].running_var.uniform_(0.5, 2.0)
    net = net.eval()
    return net.to(memory_format=torch.channels_last) if channels_last else net


def inputs(n: int = 12, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def fitted_centroids(model: nn.Module, x: torch.Tensor, layer: str = LAYER, lower: str = LOWER,
                     ks: dict[int, int] = KS) -> dict[int, np.ndarray]:
    """k-means centroids on the channels' own circuits, so the inputs split between virtual neurons."""
    circuits = pure_attributions(model, x, layer, lower, list(ks))
    return {c: VirtualNeurons(k, random_state=0).fit(circuits[:, j].numpy()).cluster_centers_
            for j, (c, k) in enumerate(ks.items())}


@pytest.fixture(scope="module")
def net_and_purified():
    net, x = tiny_net(), inputs()
    return net, purify(net, LAYER, LOWER, fitted_centroids(net, x)), x


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- the network is unchanged --------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_outputs_are_exactly_the_original_models_under_no_grad_and_with_grad(channels_last):
    net, x = tiny_net(channels_last), inputs()
    purified = purify(net, LAYER, LOWER, fitted_centroids(net, x))
    with torch.no_grad():
        original, output = net(x), purified(x)
    assert torch.equal(output, original) and not output.requires_grad

    x_net, x_purified = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    original, output = net(x_net), purified(x_purified)
    assert torch.equal(output, original)
    (grad_net,) = torch.autograd.grad(original.square().sum(), x_net)
    (grad_purified,) = torch.autograd.grad(output.square().sum(), x_purified)
    assert torch.equal(grad_purified, grad_net)


def test_parameter_gradients_flow_as_in_the_original_network(net_and_purified):
    net, purified, x = net_and_purified
    net.zero_grad()
    purified.zero_grad()
    net(x).sum().backward()
    purified(x).sum().backward()
    expected = dict(net.named_parameters())
    for name, parameter in purified.model.named_parameters():
        original = expected[name.replace(f"{LAYER}.layer.", f"{LAYER}.")]
        assert torch.allclose(parameter.grad, original.grad, atol=1e-6), name
    assert all(p.requires_grad for p in purified.parameters())


def test_a_purified_copy_leaves_the_given_model_untouched():
    net = tiny_net()
    before = model_fingerprint(net)
    purified = purify(net, LAYER, LOWER, fitted_centroids(net, inputs()))
    assert not isinstance(get_layer(net, LAYER), PurifiedLayer)
    assert isinstance(get_layer(purified.model, LAYER), PurifiedLayer)
    assert model_fingerprint(net) == before == model_fingerprint(purified.base_model())


# -- the method: circuits, assignment, virtual channels ------------------------------------------------------
def test_the_circuits_of_the_forward_pass_are_pure_attributions(net_and_purified):
    net, purified, x = net_and_purified
    expected = pure_attributions(net, x, LAYER, LOWER, purified.channels)
    with torch.no_grad():
        circuits = purified_pass(purified, x).circuits
    assert circuits.shape == (len(x), len(CHANNELS), 6)
    assert torch.allclose(circuits, expected, atol=1e-6)


def test_each_input_goes_to_the_nearest_centroid_as_virtual_neurons_predict(net_and_purified):
    net, purified, x = net_and_purified
    layer = purified.purified_layer
    reference = pure_attributions(net, x, LAYER, LOWER, purified.channels).numpy()
    with torch.no_grad():
        passed = purified_pass(purified, x)
    for j, channel in enumerate(purified.channels):
        centroids = layer.centroids_of(channel).numpy()
        predicted = VirtualNeurons.from_centroids(centroids).predict(reference[:, j])
        assert np.array_equal(passed.assignment[:, j].numpy(), predicted), channel
    assert len(set(passed.assignment[:, 1].tolist())) > 1  # the split is not trivial on these inputs


def test_virtual_channels_sum_back_to_their_channel_and_vanish_where_not_assigned(net_and_purified):
    net, purified, x = net_and_purified
    with torch.no_grad(), capture(net, [LAYER]) as seen:
        net(x)
        maps = seen[LAYER]
    with torch.no_grad():
        passed = purified_pass(purified, x)
    names = purified.virtual_channels
    assert names == [(c, vn) for c in CHANNELS for vn in range(1, KS[c] + 1)]
    assert passed.virtual.shape == (len(x), sum(KS.values()), *maps.shape[2:])
    for j, channel in enumerate(purified.channels):
        columns = [i for i, (c, _) in enumerate(names) if c == channel]
        assert torch.equal(passed.virtual[:, columns].sum(dim=1), maps[:, channel])
        for vn, column in enumerate(columns):
            assigned = (passed.assignment[:, j] == vn)[:, None, None]
            assert torch.equal(passed.virtual[:, column], torch.where(assigned, maps[:, channel], 0.0))
    assert torch.equal(virtual_activations(purified, x), passed.virtual)


def test_the_expanded_view_replaces_each_channel_by_its_virtual_channels_and_merges_back(net_and_purified):
    net, purified, x = net_and_purified
    layer = purified.purified_layer
    with torch.no_grad(), capture(net, [LAYER]) as seen:
        net(x)
        maps = seen[LAYER]
    virtual = virtual_activations(purified, x)
    expanded = layer.expand(maps, virtual)
    names = layer.expanded_channels(maps.shape[1])
    assert expanded.shape[1] == len(names) == 10 - len(CHANNELS) + sum(KS.values())
    for column, (channel, vn) in enumerate(names):
        source = maps[:, channel] if vn == 0 else virtual[:, purified.virtual_channels.index((channel, vn))]
        assert torch.equal(expanded[:, column], source)
    assert torch.equal(layer.merge(expanded), maps)


def test_a_hook_on_the_virtual_channels_ablates_one_circuit_downstream(net_and_purified):
    net, purified, x = net_and_purified
    column = purified.virtual_channels.index((4, 1))

    def ablate(_module, _args, virtual):
        virtual = virtual.clone()
        virtual[:, column] = 0
        return virtual

    handle = purified.purified_layer.virtual.register_forward_hook(ablate)
    try:
        with torch.no_grad():
            ablated, passed = purified(x), purified_pass(purified, x)
    finally:
        handle.remove()
    with torch.no_grad(), capture(net, [LAYER]) as seen:
        net(x)
        maps = seen[LAYER].clone()
    silenced = passed.assignment[:, purified.channels.index(4)] == 0
    maps[silenced, 4] = 0
    with torch.no_grad():
        expected = net.fc(net.after(maps).mean(dim=(2, 3)))
    assert silenced.any() and torch.allclose(ablated, expected, atol=1e-6)


# -- hooks and flags -----------------------------------------------------------------------------------------
def test_no_hook_or_frozen_parameter_survives_a_call_or_an_error():
    net, x = tiny_net(), inputs()
    wrong_width = {1: np.zeros((2, 5), dtype=np.float32)}  # the lower layer has 6 channels
    purified = purify(net, LAYER, LOWER, wrong_width)
    flags = [p.requires_grad for p in purified.parameters()]
    with pytest.raises(ValueError, match="6 channels"), torch.no_grad():
        purified(x)
    assert no_hooks(purified) and purified.purified_layer._pass is None
    assert [p.requires_grad for p in purified.parameters()] == flags
    good = purify(net, LAYER, LOWER, fitted_centroids(net, x))
    with torch.no_grad():
        good(x)
    virtual_activations(good, x)
    good(x)
    assert no_hooks(good) and no_hooks(net)
    assert [p.requires_grad for p in good.parameters()] == flags


def test_bad_layers_channels_and_modes_are_clear_errors():
    net, x = tiny_net(), inputs()
    centroids = fitted_centroids(net, x)
    with pytest.raises(UnknownLayerError, match="nope"):
        purify(net, "nope", LOWER, centroids)
    with pytest.raises(ValueError, match="earlier layer"):
        purify(net, LAYER, LAYER, centroids)
    with pytest.raises(ValueError, match="at least one channel"):
        purify(net, LAYER, LOWER, {})
    with pytest.raises(ValueError, match="out of range"), torch.no_grad():
        purify(net, LAYER, LOWER, {12: centroids[1]})(x)
    with pytest.raises(ValueError, match="must run before"), torch.no_grad():
        purify(net, "block", "top", {1: np.zeros((2, 10))})(x)
    with pytest.raises(RuntimeError, match="no_grad"), torch.inference_mode():
        purify(net, LAYER, LOWER, centroids)(x)
    with pytest.raises(RuntimeError, match="inside its PurifiedModel"):
        purify(net, LAYER, LOWER, centroids).purified_layer(torch.zeros(1, 8, 8, 8))


# -- the export ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory):
    """A purified torchvision ResNet-18 (random weights) saved with a spec naming hub weights that are not
    here: loading must not need them (the export carries the weights)."""
    loaded = build_model(ModelSpec("resnet18"))
    x = inputs(4, 64)
    centroids = fitted_centroids(loaded.model, x, "layer4", "layer3", {5: 2, 9: 2})
    purified = purify(loaded.model, "layer4", "layer3", centroids, preprocess=loaded.preprocess)
    path = tmp_path_factory.mktemp("export") / "resnet18-purified.pt"
    save_purified(path, purified, ModelSpec("resnet18", weights="IMAGENET1K_V1"), run_id="abc",
                  metrics={"selectivity": 1.0})
    return path, purified, x


def test_an_export_loads_in_one_call_with_the_same_virtual_channels_and_outputs(resnet_export, monkeypatch):
    monkeypatch.setenv("PURE_OFFLINE", "1")
    path, purified, x = resnet_export
    loaded = load_purified(path)
    assert loaded.virtual_channels == purified.virtual_channels == [(5, 1), (5, 2), (9, 1), (9, 2)]
    assert loaded.preprocess == purified.preprocess and not loaded.training
    with torch.no_grad():
        before, after = purified_pass(purified, x), purified_pass(loaded, x)
    assert torch.equal(after.outputs, before.outputs)
    assert torch.equal(after.virtual, before.virtual)
    saved = read_export(path)
    assert saved["format_version"] == FORMAT_VERSION and saved["run_id"] == "abc"
    assert saved["model"]["weights"] == "IMAGENET1K_V1" and saved["metrics"] == {"selectivity": 1.0}
    assert [(e["channel"], e["k"], tuple(e["centroids"].shape)) for e in saved["channels"]] == [
        (5, 2, (2, 256)), (9, 2, (2, 256))]
    assert saved["model_fingerprint"] == model_fingerprint(purified.base_model())


def _rewritten(path, tmp_path, **changes):
    payload = read_export(path)
    payload.update(changes)
    out = tmp_path / "changed.pt"
    torch.save(payload, out)
    return out


def test_unreadable_foreign_newer_or_mismatched_exports_are_one_line_errors(resnet_export, tmp_path):
    path = resnet_export[0]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    weights = dict(read_export(path)["state_dict"])
    weights["fc.bias"] = weights["fc.bias"] + 1
    cases = {
        tmp_path / "missing.pt": "no such file",
        garbage: "not a purified-layer export",
        plain: "not a purified-layer export",
        _rewritten(path, tmp_path, format_version=FORMAT_VERSION + 1): "newer",
    }
    for bad, message in cases.items():
        with pytest.raises(PurifiedExportError, match=message) as caught:
            load_purified(bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(PurifiedExportError, match="fingerprint"):
        load_purified(_rewritten(path, tmp_path, state_dict=weights))
    with pytest.raises(ValueError, match="nope"):
        load_purified(_rewritten(path, tmp_path, layer="nope"))


# -- the CLI on a real store ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_store(demo_runs_root):
    root, _ = demo_runs_root
    return next(p for p in sorted(root.iterdir()) if (p / "cache.db").is_file())


def _reference_batch(store: RunStore, neuron: int, preprocess) -> torch.Tensor:
    references = store.read(References)
    indices = references.indices[references.row(neuron)]
    images = [store.read(ReferenceImage, int(i)).data for i in indices[indices >= 0]]
    pixels = [np.asarray(decode_image(data)) for data in images]
    return preprocess.from_pixels(np.stack(pixels))


def test_the_cli_exports_the_most_polysemantic_neurons_numbered_as_the_dashboard(demo_store, tmp_path,
                                                                                  capsys):
    out = tmp_path / "demo-purified.pt"
    assert precompute_main(["purify", str(demo_store), "--out", str(out), "--top", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "from pure_core.purify import load_purified" in printed and "selectivity" in printed
    purified = load_purified(out)
    with RunStore.open(demo_store) as store:
        meta = store.read(RunMeta)
        ranked = sorted(store.read(Summary).rows, key=lambda row: row.polysemanticity, reverse=True)
        assert purified.channels == sorted(row.neuron for row in ranked[:2])
        for channel in purified.channels:
            stored = store.read(NeuronScores, channel).centroids[2]
            vectors = store.read(PureVectors, channel).values
            expected = VirtualNeurons.from_stored(stored, vectors, random_state=meta.seed).cluster_centers_
            assert np.allclose(purified.purified_layer.centroids_of(channel).numpy(), expected, atol=1e-6)
        x = _reference_batch(store, purified.channels[0], purified.preprocess)
    model = build_model(ModelSpec.from_dict(meta.config["model"]), fetch_missing=False).model
    with torch.no_grad():
        assert torch.equal(purified(x), model(x))
    metrics = read_export(out)["metrics"]
    assert metrics["k"] == 2 and all(n["max_abs_diff"] == 0.0 for n in metrics["neurons"])
    assert all(0.0 <= n["selectivity"] <= 1.0 and 0.0 <= n["agreement"] <= 1.0 for n in metrics["neurons"])
    assert no_hooks(purified) and no_hooks(model)


def test_the_cli_fits_a_k_the_run_did_not_store(demo_store, tmp_path, capsys):
    out = tmp_path / "k4.pt"
    assert precompute_main(["purify", str(demo_store), "--out", str(out), "--neurons", "3,5", "--k", "4",
                            "--no-progress"]) == 0
    assert load_purified(out).virtual_channels == [(c, vn) for c in (3, 5) for vn in range(1, 5)]


def test_the_cli_says_in_one_line_what_is_wrong(demo_store, tmp_path, capsys):
    out = str(tmp_path / "x.pt")
    with RunStore.open(demo_store) as store:
        references = store.read(References)
    too_many = str(references.n_ref + 1)
    cases = [
        ([str(tmp_path / "no-store"), "--out", out], "precompute purify: error"),
        ([str(demo_store), "--out", out, "--neurons", str(max(references.neuron_ids) + 1)], "--neurons"),
        ([str(demo_store), "--out", out, "--neurons", "2", "--k", too_many], f"k={too_many}"),
        ([str(demo_store), "--out", str(tmp_path / "no-dir" / "x.pt"), "--neurons", "2"], "does not exist"),
    ]
    for argv, message in cases:
        assert precompute_main(["purify", *argv, "--no-progress"]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "x.pt").exists()
