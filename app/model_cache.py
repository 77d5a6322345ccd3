"""The run's model for the upload page, and the analyses of uploaded images, cached.

The model is built once per run from the stored spec with ``fetch_missing=False``: a page never downloads
weights or trains the demo net; a missing file raises `pure_core.models.MissingWeightsError` (or
`FileNotFoundError` for a missing checkpoint) whose message says how to provide it. Model builders that live
outside pure_core (the synthetic world's demo net) are registered by `pure_core.registry.load_plugins`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import streamlit as st
from PIL import Image

from app.safe_text import code
from app.store_access import RunRef, crop_heatmap_method, neuron_order, references, run_details
from app.uploads import UploadAnalysis, analyse_image

if TYPE_CHECKING:
    from pure_core.models import LoadedModel

# One forward pass at a time in this server, held around every use of a cached model. Sessions run in
# threads of their own and share the cached models: pure_core's forward hooks, put on a shared model by one
# session, would also fire in another's forward; and forwards running at once came out a few ulp apart
# from a forward alone (upload distances differing in the ninth digit between 20 concurrent sessions and
# one alone, benchmarks/bench_concurrency.py). On a CPU they take no longer one after another.
FORWARD_LOCK = threading.Lock()


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def model_for(run: RunRef):
    """The run's model (`pure_core.models.LoadedModel`), built once per run from the stored config."""
    from pure_core.models import ModelSpec, build_model
    from pure_core.registry import load_plugins

    load_plugins()
    model = run_details(run).meta.model
    return build_model(ModelSpec(model.name, model.weights, model.checkpoint), fetch_missing=False)


@contextmanager
def exclusive_model(run: RunRef) -> Iterator[LoadedModel]:
    """The run's model (`model_for`) for this session alone until the block ends (`FORWARD_LOCK`): the way
    to run it."""
    loaded = model_for(run)
    with FORWARD_LOCK:
        yield loaded


def model_problem(run: RunRef) -> str | None:
    """Why the run's model cannot be loaded here, as one line for the page (never a traceback), or None."""
    try:
        model_for(run)
    except Exception as error:  # noqa: BLE001 - any model failure becomes a message
        return f"The run's model could not be loaded: {code(error, max_chars=300)}"
    return None


@st.cache_data(show_spinner=False, max_entries=16)
def model_matches_run(run: RunRef) -> bool | None:
    """Whether the model the app loads for ``run`` has the weights precompute recorded (sha256 over the state
    dict, `pure_core.models.model_fingerprint`); None when the run recorded no fingerprint."""
    from pure_core.models import model_fingerprint

    expected = run_details(run).meta.model_fingerprint
    if not expected:
        return None
    return model_fingerprint(model_for(run).model)[: len(expected)] == expected


@st.cache_resource(show_spinner="Loading CLIP…", max_entries=2)
def clip_probe(spec: str):
    """The CLIP model that named a run's crops (`pure_core.clip_labels.ClipProbe`), for free-text search;
    raises `pure_core.models.MissingWeightsError` when its weights are not on this machine."""
    from pure_core.clip_labels import make_clip_probe

    return make_clip_probe(spec)


@st.cache_data(show_spinner=False, max_entries=256)
def clip_text_vector(spec: str, text: str):
    """``text``'s unit-length CLIP feature (prompt-ensembled like the vocabulary), cached per query."""
    probe = clip_probe(spec)
    with FORWARD_LOCK:
        return probe.encode_texts([text])[0]


@st.cache_data(show_spinner=False, max_entries=64)
def analyse_upload(
    run: RunRef, image_sha: str, _image: Image.Image, neuron: int, top_n: int = 5
) -> UploadAnalysis:
    """The k-independent part of an upload's analysis (`app.uploads.analyse_image`), cached by image hash."""
    meta = run_details(run).meta
    refs = references(run)
    order, method = neuron_order(run), crop_heatmap_method(run)
    weakest = None if refs is None else refs.weakest_activations()
    with exclusive_model(run) as loaded:
        return analyse_image(loaded, _image, meta.layer, meta.lower_layer, neuron, order, top_n=top_n,
                             heatmap_method=method, weakest=weakest)
