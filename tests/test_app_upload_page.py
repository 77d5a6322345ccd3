"""The upload page explains what an image does to a neuron: its activation as a percentile of the neuron's
references, an assignment only where one means something (the neuron fires, no tie between the nearest two
virtual neurons), example images to try, and links from every neuron it lists to that neuron's page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from app.analysis import TIE_MARGIN, activation_percentile, judge_assignment

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
REFERENCES = np.array([5.1, 5.5, 6.0, 6.3])


def _page(monkeypatch, root: Path, neuron: int) -> AppTest:
    monkeypatch.setenv("PURE_RUNS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params = {"page": "upload", "run": "small", "neuron": str(neuron), "k": "2"}
    return at.run()


def _verdicts(at: AppTest) -> tuple[list[str], list[str]]:
    """(green assignments, "No assignment" warnings)."""
    return [s.value for s in at.success], [w.value for w in at.warning if w.value.startswith("No assignment")]


# -- the judgement, as plain functions -------------------------------------------------------------------
def test_the_percentile_is_the_share_of_references_the_image_reaches():
    assert activation_percentile(5.5, REFERENCES) == 50.0
    assert activation_percentile(9.0, REFERENCES) == 100.0
    assert activation_percentile(0.1, REFERENCES) == 0.0
    assert activation_percentile(1.0, np.array([])) is None


def test_a_clear_nearest_centroid_of_a_firing_neuron_is_an_assignment():
    judged = judge_assignment(5.8, REFERENCES, np.array([0.9, 0.3, 0.7]))
    assert judged.counts and judged.nearest == 1 and judged.fires and judged.runner_up is None
    assert judged.percentile == 50.0


def test_below_the_weakest_reference_the_neuron_does_not_fire():
    for activation in (0.06, 1.25, 5.09, 0.0):  # the 0.06-1.25 against references at 5.1-6.3
        judged = judge_assignment(activation, REFERENCES, np.array([0.2, 0.9]))
        assert not judged.fires and not judged.counts and judged.nearest == 0
    assert judge_assignment(5.1, REFERENCES, np.array([0.2, 0.9])).counts  # the weakest reference itself


def test_nearest_two_centroids_within_the_margin_are_a_tie():
    tied = judge_assignment(6.0, REFERENCES, np.array([0.4001, 0.4, 0.9]))  # equal to 3 digits
    assert tied.fires and not tied.counts and (tied.nearest, tied.runner_up) == (1, 0)
    assert not judge_assignment(6.0, REFERENCES, np.array([1.0 - TIE_MARGIN + 0.001, 1.0])).counts
    assert judge_assignment(6.0, REFERENCES, np.array([1.0 - TIE_MARGIN - 0.001, 1.0])).counts
    assert judge_assignment(6.0, REFERENCES, np.array([0.5])).counts  # k = 1: nothing to tie with


# -- the page ----------------------------------------------------------------------------------------------
# The small run's model is an untrained resnet18 (random weights per process), so the page tests fix what the
# image does: `judge_assignment` sees the activation and distances below instead of the model's.
def _force(monkeypatch, activation: float | None = None, distances: list[float] | None = None) -> None:
    """Make the page judge every image with ``activation`` (None: the weakest reference's) and centroid
    ``distances`` (None: the model's)."""
    from app import analysis

    real = analysis.judge_assignment

    def forced(image_activation, references, image_distances, **kwargs):
        chosen = min(references) if activation is None else activation
        chosen_distances = (
            image_distances if distances is None else np.array(distances[: len(image_distances)])
        )
        return real(chosen, references, chosen_distances, **kwargs)

    monkeypatch.setattr(analysis, "judge_assignment", forced)


def _upload(at: AppTest, colour: str = "black") -> AppTest:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return at.file_uploader[0].set_value((f"{colour}.png", buffer.getvalue(), "image/png")).run()


def test_an_image_the_neuron_does_not_fire_on_gets_no_green_box(monkeypatch, small_runs_root):
    _force(monkeypatch, activation=0.06, distances=[0.2, 0.9])
    at = _upload(_page(monkeypatch, small_runs_root, 3))
    assert not at.exception, [e.value for e in at.exception]
    assigned, refused = _verdicts(at)
    assert not assigned and len(refused) == 1
    assert "does not fire" in refused[0] and "weakest reference" in refused[0]
    assert "The nearest virtual neuron, VN 1, is shown for comparison only." in refused[0]
    assert any("References of the nearest virtual neuron, VN 1" in m.value for m in at.markdown)
    assert "Percentile among its references" in [m.label for m in at.metric]


def test_a_firing_neuron_with_a_clear_nearest_centroid_is_assigned(monkeypatch, small_runs_root):
    _force(monkeypatch, distances=[0.9, 0.2])
    at = _upload(_page(monkeypatch, small_runs_root, 3))
    assigned, refused = _verdicts(at)
    assert not refused and assigned == [
        "Assigned to **VN 2** of 2 (nearest centroid, distance 0.2000; the next is at 0.9000)."
    ]


def test_a_tie_is_shown_with_both_distances(monkeypatch, small_runs_root):
    _force(monkeypatch, distances=[0.4001, 0.4])
    at = _upload(_page(monkeypatch, small_runs_root, 3))
    assigned, refused = _verdicts(at)
    assert not assigned and len(refused) == 1
    assert f"within {TIE_MARGIN:.0%} of each other (VN 2 at 0.4000, VN 1 at 0.4001)" in refused[0]
    assert "does not fire" not in refused[0]


def test_example_images_are_offered_and_analysed(monkeypatch, small_runs_root):
    at = _page(monkeypatch, small_runs_root, 7)
    assert not at.exception and not at.error
    assert [e for e in at.expander if e.label.startswith("No image at hand")]
    labels = [b.key.removeprefix("example_") for b in at.button if b.key and b.key.startswith("example_")]
    assert len(labels) == 6 and labels[0] == "its reference #1" and labels[1].startswith("its reference #")
    assert all(label.startswith("dataset image ") for label in labels[2:])  # other neurons' references
    assert not at.subheader  # nothing analysed before a choice
    for label in (labels[0], labels[-1]):
        at.button(key=f"example_{label}").click().run()
        assert not at.exception and not at.error
        assert [s.value.strip("`") for s in at.subheader] == [label]
        assert sum(len(v) for v in _verdicts(at)) == 1
    at.button(key="example_clear").click().run()
    assert not at.subheader


def test_every_listed_neuron_links_to_its_neuron_page(monkeypatch, small_runs_root):
    at = _upload(_page(monkeypatch, small_runs_root, 3))
    table = at.dataframe[0].value
    assert len(table) == 5
    assert all(url.startswith("neuron?run=small&neuron=") for url in table["neuron"])
    assert {url.rsplit("&k=", 1)[1] for url in table["neuron"]} <= {"1", "2"}
    assert set(table.columns) >= {"percentile of its references", "virtual neuron", "distance", "label"}


def test_which_circuits_fire_names_each_neurons_virtual_neuron_with_its_distance_and_label(
    monkeypatch, small_runs_root
):
    """Image probing: every listed neuron's row carries its (nearest) virtual neuron's centroid distance and
    that virtual neuron's dataset label, as the neuron page names it."""
    from app import analysis, store_access
    from store import list_runs

    _force(monkeypatch, distances=[0.9, 0.2])  # every neuron fires and VN 2 is nearest
    at = _upload(_page(monkeypatch, small_runs_root, 3))
    table = at.dataframe[0].value
    run = store_access.run_ref(next(r for r in list_runs(small_runs_root) if r.directory.name == "small"))
    names = store_access.data_label_names(run)
    assigned = table[table["virtual neuron"] == "VN 2"]
    assert len(assigned) >= 3  # the neurons with at least 2 references
    for _, row in assigned.iterrows():
        neuron, k = int(row["neuron"].split("neuron=")[1].split("&")[0]), int(row["of k"])
        assert row["distance"] == 0.2
        first = analysis.cluster_labels(run, neuron, k, "pure", source="data")[1][0]
        assert row["label"] == f"{names[first.label]} ({first.share:.0%})"
