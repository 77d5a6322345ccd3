"""The causal check on the neuron page: ablate each virtual neuron's circuit in the lower layer and show
whose activation falls (`pure_core.causal`), for the chosen k and across k.

It runs the run's model on the neuron's stored reference images (at model-input resolution), so it is
computed on request and cached per (run, neuron, k, settings); the page never runs it by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from app import analysis, figures, model_cache, state, store_access
from app.store_access import NeuronData, RunRef

BATCH = 64  # references per forward pass


@dataclass(frozen=True)
class Settings:
    """How to ablate: ``n_channels`` per circuit, replaced by their ``mode`` ("mean" or "zero")."""

    n_channels: int
    mode: str


@st.cache_resource(show_spinner=False, max_entries=64)
def reference_inputs(run: RunRef, neuron: int):
    """The neuron's references as the model's inputs ``(n, 3, H, W)`` on its device: the stored images are
    at model-input geometry already, so only the model's normalisation is applied."""
    from store.codecs import decode_pixels

    nd = store_access.neuron_data(run, neuron)
    loaded = model_cache.model_for(run)
    blobs = [store_access.reference_image(run, int(i)) for i in nd.dataset_indices[: nd.n_references]]
    device = next(loaded.model.parameters()).device
    return loaded.preprocess.from_pixels(decode_pixels(blobs)).to(device)


@st.cache_data(show_spinner=False, max_entries=512)
def causal_check(run: RunRef, neuron: int, k: int, settings: Settings):
    """`pure_core.causal.causal_check` of the neuron's k virtual neurons (numbered as the page shows them)
    on its references."""
    from pure_core.causal import causal_check as check

    result = analysis.clustering(run, neuron, k, "pure")
    meta = store_access.run_details(run).meta
    inputs = reference_inputs(run, neuron)
    with model_cache.exclusive_model(run) as loaded:
        return check(loaded.model, inputs, meta.layer, meta.lower_layer, neuron, result.centers,
                     result.labels, n_channels=settings.n_channels, mode=settings.mode, batch_size=BATCH)


def controls(nd: NeuronData, c_lower: int) -> Settings:
    """How many channels per circuit and what replaces them."""
    left, right = st.columns(2)
    n_channels = left.number_input(
        "channels ablated per circuit", min_value=1, max_value=max(1, c_lower), value=min(10, c_lower),
        key="causal_channels",
        help="per virtual neuron, the lower-layer channels whose centroid weight exceeds the other virtual "
        "neurons' mean weight most: the channels that set its circuit apart",
    )
    mode = right.segmented_control(
        "replaced by", ["mean", "zero"], default="mean", key="causal_mode",
        help="mean: the channel's mean over the neuron's references and space (the layer stays in its usual "
        "range); zero: switched off",
    ) or "mean"
    return Settings(int(n_channels), mode)


def section(run: RunRef, nd: NeuronData, k: int) -> None:
    """The causal check for this k on request, then the selectivity across k on a second request."""
    with st.expander("Causal check: ablate each virtual neuron's circuit", icon=":material/science:"):
        st.caption(
            "Each virtual neuron's circuit channels are replaced in the lower layer; the neuron's activation "
            "is then measured again on every reference. A circuit that carries its virtual neuron removes "
            "much of the activation on its own references and little on the others'."
        )
        if k < 2:
            st.caption("Choose k ≥ 2 to compare circuits.")
            return
        c_lower = 0 if nd.pure is None else nd.pure.shape[1]
        settings = controls(nd, c_lower)
        if not st.toggle("Run the causal check (runs the model on the references)", key="causal_on"):
            return
        problem = model_cache.model_problem(run)
        if problem:
            st.warning(problem, icon=":material/warning:")
            return
        with st.spinner("Ablating the circuits…"):
            result = causal_check(run, nd.neuron, k, settings)
        meta = store_access.run_details(run).meta
        st.plotly_chart(figures.ablation_figure(result.removed, result.channels, meta.lower_layer),
                        key=f"ablation_{nd.neuron}_{k}")
        st.markdown(selectivity_text(result.removed, result.selectivity))
        across_k(run, nd, settings)


def selectivity_text(removed: np.ndarray, selectivity: np.ndarray) -> str:
    """One line per virtual neuron: removed on its own references, on the others', and the difference."""
    k = len(removed)
    lines = []
    for c in range(k):
        others = [removed[c, g] for g in range(k) if g != c]
        lines.append(
            f"- **{figures.vn_name(c)}**: its circuit removes {removed[c, c]:.0%} of the activation on its "
            f"own references and {np.nanmean(others):.0%} on the others' (selectivity {selectivity[c]:+.2f})"
        )
    return "\n".join(lines)


def across_k(run: RunRef, nd: NeuronData, settings: Settings) -> None:
    """Selectivity per virtual neuron for every k from 2 up, on request (k + 1 passes per k)."""
    if not st.toggle("Selectivity across k", key="causal_across_k"):
        return
    ks = list(range(2, state.clamp_k(state.K_MAX, nd.n_references) + 1))
    progress = st.progress(0.0, text="Ablating the circuits for every k…")
    by_k = {}
    for i, k in enumerate(ks):
        by_k[k] = causal_check(run, nd.neuron, k, settings).selectivity
        progress.progress((i + 1) / len(ks), text=f"k = {k} done")
    progress.empty()
    st.plotly_chart(figures.selectivity_by_k_figure(by_k), key=f"selectivity_k_{nd.neuron}")
