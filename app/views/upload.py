"""Upload page: run the run's model on your own images; for a chosen neuron and k show its activation, the
input heatmap, the circuit vector, the assigned virtual neuron (nearest centroid) with the distances to all
centroids and that virtual neuron's references; and list the neurons each image activates most."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import analysis, figures, model_cache, sheets, store_access, ui, uploads
from app.store_access import RunRef

N_TOP_NEURONS = 5


def assign(run: RunRef, neuron: int, k: int, circuit: np.ndarray) -> tuple[int, np.ndarray] | None:
    """Nearest virtual neuron (0-based) of a circuit vector ``(C_lower,)`` and its distances ``(k,)``."""
    result = analysis.clustering(run, neuron, k, "pure")
    if result is None or result.centers.shape[1] != circuit.shape[0]:
        return None
    return result.assign(circuit), result.distances(circuit)


def top_neurons_table(run: RunRef, image_analysis: uploads.UploadAnalysis, k: int) -> pd.DataFrame:
    """The neurons the image activates most, each with its activation and assigned virtual neuron."""
    rows = []
    for neuron in image_analysis.top:
        nd = store_access.neuron_data(run, neuron)
        k_here = min(k, nd.n_references) if nd is not None else k
        assigned = (
            assign(run, neuron, k_here, image_analysis.circuits[neuron]) if nd and nd.n_references else None
        )
        top_refs = nd.max_activations if nd is not None else np.array([])
        rows.append(
            {
                "neuron": neuron,
                "activation": image_analysis.activations[neuron],
                "above % of its references": (
                    100.0 * float((top_refs <= image_analysis.activations[neuron]).mean())
                    if len(top_refs)
                    else None
                ),
                "virtual neuron": figures.vn_name(assigned[0]) if assigned else "–",
                "of k": k_here,
            }
        )
    return pd.DataFrame(rows)


def show_analysis(
    run: RunRef, upload: uploads.UploadedImage, neuron: int, k: int, key: str | None = None
) -> None:
    """``key`` (default: the image's hash) keeps the elements of the same image uploaded twice apart."""
    from pure_core.crops import heatmap_overlay

    image_analysis = model_cache.analyse_upload(run, upload.sha256, upload.image, neuron, N_TOP_NEURONS)
    meta = store_access.run_details(run).meta
    nd = store_access.neuron_data(run, neuron)
    activation = image_analysis.activations.get(neuron, float("nan"))
    pictures, numbers = st.columns([2, 3])
    with pictures:
        overlay = heatmap_overlay(np.asarray(image_analysis.model_input), image_analysis.heatmap)
        st.image(
            [image_analysis.model_input, overlay],
            width=180,
            caption=["model input", f"input heatmap of neuron {neuron} (red +, blue −)"],
        )
    with numbers:
        refs = nd.max_activations if nd is not None else np.array([])
        cols = st.columns(2)
        cols[0].metric(
            f"Activation of neuron {neuron}",
            f"{activation:.3f}",
            help="max over positions of the channel's map (the reference-selection statistic)",
        )
        if len(refs):
            cols[1].metric("Its references' activations", f"{refs.min():.2f} – {refs.max():.2f}")
        assigned = assign(run, neuron, k, image_analysis.circuits[neuron])
        if assigned is None:
            st.warning("This neuron has too few references to split into virtual neurons.")
        else:
            index, distances = assigned
            st.success(
                f"Assigned to **{figures.vn_name(index)}** of {k} (nearest centroid, distance "
                f"{distances[index]:.4f})."
            )
            st.plotly_chart(
                figures.distances_figure(distances, index), key=f"dist_{key or upload.sha256}_{neuron}_{k}"
            )
    circuit_col, vn_col = st.columns([2, 3])
    with circuit_col:
        st.html(
            "<div style='font-size:14px;margin-bottom:4px'><b>This image's circuit</b> · PURE attribution "
            f"of neuron {neuron} to the <code>{meta.lower_layer}</code> channels (largest entries)</div>"
            + figures.circuit_html(image_analysis.circuits[neuron], 8, "#555555", meta.lower_layer)
        )
    with vn_col:
        if assigned is not None:
            index = assigned[0]
            size = int(analysis.clustering(run, neuron, k, "pure").sizes[index])
            st.markdown(
                f"**References of {figures.vn_name(index)}** ({size} of neuron {neuron}'s references)"
            )
            sheet = sheets.reference_sheet(run, neuron, k, "pure", index, columns=8)
            if sheet is not None:
                st.image(sheet, width="content")
    st.markdown(f"**Neurons this image activates most** (among the run's {len(image_analysis.activations)})")
    st.dataframe(
        top_neurons_table(run, image_analysis, k),
        hide_index=True,
        column_config={
            "activation": st.column_config.NumberColumn(format="%.3f"),
            "above % of its references": st.column_config.NumberColumn(
                format="%.0f%%",
                help="share of the neuron's reference images that activate it less than this image",
            ),
        },
    )


def render() -> None:
    run = ui.choose_run()
    if run is None:
        return
    st.title("Upload an image")
    if not run.complete:
        ui.progress(run, "uploads")
        return
    order = store_access.neuron_order(run)
    controls = st.columns([3, 2])
    with controls[0]:
        neuron = ui.choose_neuron(order, with_steps=False)
    nd = store_access.neuron_data(run, neuron)
    with controls[1]:
        k = ui.choose_k(nd.n_references if nd is not None else 0)
    ui.write_params(run=run.name, neuron=neuron, k=k)
    files = st.file_uploader(
        "Images (PNG, JPEG or WEBP)",
        type=uploads.ACCEPTED_EXTENSIONS,
        accept_multiple_files=True,
        key="uploads",
        help=(
            f"Up to {uploads.MAX_UPLOAD_MB} MB, {uploads.MAX_PIXELS / 1e6:.0f} megapixels and "
            f"{uploads.MAX_ASPECT_RATIO}:1 sides each."
        ),
    )
    if not files:
        st.caption(
            "The image is resized and centre-cropped like the model's inputs, then analysed with the same "
            "code as the precomputed references."
        )
        return
    try:
        model_cache.model_for(run)
        matches = model_cache.model_matches_run(run)
    except Exception as error:  # noqa: BLE001 - any model failure becomes a message, never a traceback
        st.error(f"The run's model could not be loaded: {error}", icon=":material/error:")
        return
    if matches is False:
        st.warning(
            "The model loaded for this run has other weights than the one precompute used (fingerprint "
            "mismatch; e.g. the demo net was retrained since). Uploads are analysed with the loaded model, "
            "so their circuits may not match the stored references; recompute the run with "
            f"`{ui.PRECOMPUTE_COMMAND}`.",
            icon=":material/warning:",
        )
    for file in files:
        st.divider()
        st.subheader(file.name)
        try:
            upload = uploads.decode_upload(file.name, file.getvalue())
        except uploads.UploadError as error:
            st.error(str(error), icon=":material/block:")
            continue
        for note in upload.notes:
            st.caption(f"Note: {note}.")
        try:
            show_analysis(run, upload, neuron, k, key=file.file_id)
        except Exception as error:  # noqa: BLE001
            st.error(f"Analysing {file.name} failed: {type(error).__name__}: {error}")


if __name__ == "__main__":
    render()
