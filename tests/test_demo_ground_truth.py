"""The demo net and the world's purpose: planted polysemantic channels that PURE separates.

The session fixture loads the demo net from ``$PURE_CACHE_DIR`` (default ``~/.cache/pure-explorer``) and
trains it there first when it is missing (about 1-2 minutes on 2 CPU cores), so a fresh CI run pays for the
training once and later runs (and precompute) reuse the checkpoint.
"""

import numpy as np
import pytest
import torch

from synthetic.demo import (
    DEMO_LAYER,
    DEMO_LOWER_LAYER,
    DEMO_PREPROCESSING,
    DEMO_VERSION,
    DemoNet,
    demo_dataset,
    load_demo_model,
    read_checkpoint,
    train_demo_model,
)
from synthetic.ground_truth import ground_truth_report
from synthetic.world import CLASSES

N_REF = 100


# -- the net and its checkpoint (fast) -------------------------------------------------------------------
def test_demo_net_has_named_blocks_and_one_channel_per_class_in_the_analysed_layer():
    model = DemoNet(n_classes=len(CLASSES)).eval()
    names = dict(model.named_children())
    assert list(names) == ["stem", "block1", "block2", "block3", "block4", "pool", "fc"]
    shapes = {}
    hooks = [names[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
             for n in ("block1", "block2", "block3", "block4")]
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert logits.shape == (2, len(CLASSES))
    assert shapes[DEMO_LAYER][1] == len(CLASSES)
    assert DEMO_LOWER_LAYER in shapes and DEMO_LOWER_LAYER != DEMO_LAYER


def test_preprocessing_matches_the_world():
    prep = DEMO_PREPROCESSING
    assert prep.size == prep.resize == 64
    image, _ = demo_dataset("reference", 1)[0]
    x = prep.to_tensor(image)
    assert x.shape == (3, 64, 64) and abs(float(x.mean())) < 2.0


def test_training_is_deterministic_and_saves_a_checkpoint_with_metadata(tmp_path):
    kwargs = dict(n_train=256, epochs=1, n_test=64, progress=False, log=None)
    a = train_demo_model(tmp_path / "a.pt", seed=3, **kwargs)
    b = train_demo_model(tmp_path / "b.pt", seed=3, **kwargs)
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in ca["state_dict"])
    meta = ca["meta"]
    assert meta["seed"] == 3 and meta["version"] == DEMO_VERSION and 0.0 <= meta["accuracy"] <= 1.0
    assert meta["world"]["train"] == {"n_images": 256, "seed": 0, "size_px": 64}
    model = load_demo_model(a, train_if_missing=False)
    assert not model.training and model.demo_meta["seed"] == 3


def test_loading_a_missing_checkpoint_without_training_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m synthetic"):
        load_demo_model(tmp_path / "nothing.pt", train_if_missing=False)


# -- the trained net against the ground truth (trains once per machine) ---------------------------------
@pytest.fixture(scope="session")
def demo_model():
    return load_demo_model(progress=False)


@pytest.fixture(scope="session")
def report(demo_model):
    world = demo_dataset("reference")
    return ground_truth_report(demo_model, world, DEMO_LAYER, [DEMO_LOWER_LAYER], DEMO_PREPROCESSING,
                               n_ref=N_REF, ks=(2,))


@pytest.mark.slow
def test_the_demo_net_learns_the_world(demo_model):
    assert demo_model.demo_meta["accuracy"] > 0.95


@pytest.mark.slow
def test_union_classes_grow_channels_whose_references_mix_two_planted_concepts(report):
    unions = [set(c.concepts) for c in CLASSES if c.polysemantic]
    poly = report.rows("polysemantic")
    assert len(poly) >= 3, report.format_table()
    for row in poly:  # the mixed concepts are the two halves of one union class, not a blur of classes
        names, counts = np.unique(row.concepts, return_counts=True)
        major = set(names[counts >= 0.2 * N_REF])
        assert any(major <= union for union in unions), report.format_table()


@pytest.mark.slow
def test_control_classes_keep_monosemantic_channels(report):
    assert len(report.rows("monosemantic")) >= 2, report.format_table()


@pytest.mark.slow
def test_pure_separates_the_planted_concepts_and_beats_the_activation_baseline(report):
    pure = report.mean_ari("pure", 2, "polysemantic", DEMO_LOWER_LAYER)
    activation = report.mean_ari("activation", 2, "polysemantic")
    table = report.format_table()
    assert pure >= 0.8, table
    assert pure > activation + 0.2, table
