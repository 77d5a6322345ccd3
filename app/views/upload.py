"""Upload page: run the run's model on your own images (or on example images); for a chosen neuron and k show
its activation (also as a percentile of its references'), the input heatmap, the circuit vector, the nearest
virtual neuron with the distances to all centroids and that virtual neuron's references; and list the neurons
each image activates most, each linked to its neuron page. The nearest virtual neuron is called an assignment
only when the neuron fires and the nearest two centroids are not tied (`app.analysis.judge_assignment`)."""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from app import analysis, figures, model_cache, sheets, store_access, ui, uploads
from app.safe_text import code, html_text
from app.store_access import RunRef

N_TOP_NEURONS = 5
N_EXAMPLES = 6


def neuron_url(run: RunRef, neuron: int, k: int) -> str:
    """Deep link to the neuron page for ``neuron`` with ``k`` virtual neurons (relative to the app's root)."""
    return "neuron?" + urlencode({"run": run.name, "neuron": int(neuron), "k": int(k)})


def judge(
    run: RunRef, neuron: int, k: int, activation: float, circuit: np.ndarray
) -> analysis.Assignment | None:
    """The nearest virtual neuron of a circuit vector ``(C_lower,)`` among ``neuron``'s ``k`` and whether it
    counts as an assignment; None when the neuron cannot be split into ``k`` (too few references)."""
    result = analysis.clustering(run, neuron, k, "pure")
    nd = store_access.neuron_data(run, neuron)
    if result is None or nd is None or result.centers.shape[1] != circuit.shape[0]:
        return None
    return analysis.judge_assignment(
        activation, nd.max_activations, result.distances(circuit), radii=result.radii
    )


def verdict_label(assignment: analysis.Assignment | None) -> str:
    """The virtual neuron column of the top-neurons table: the assignment, or why there is none."""
    if assignment is None:
        return "–"
    if not assignment.fires:
        return "– (does not fire)"
    if assignment.runner_up is not None:
        return f"– (tie {figures.vn_name(assignment.nearest)} / {figures.vn_name(assignment.runner_up)})"
    return figures.vn_name(assignment.nearest)


def virtual_neuron_label(run: RunRef, neuron: int, k: int, virtual_neuron: int) -> str | None:
    """The first label of a virtual neuron: the dataset's where the run has them, else the model's
    predicted class, else CLIP's name of its crops; None without labels."""
    for source, names in (
        ("data", store_access.data_label_names(run)),
        ("predicted", store_access.class_names(run)),
        ("clip", store_access.clip_label_names(run)),
    ):
        shares = analysis.cluster_labels(run, neuron, k, "pure", source=source)
        if shares and names and shares[virtual_neuron]:
            label = shares[virtual_neuron][0]
            return f"{names[label.label]} ({label.share:.0%})"
    return None


def top_neurons_table(run: RunRef, image_analysis: uploads.UploadAnalysis, k: int) -> pd.DataFrame:
    """The neurons the image activates most ("which circuits fire"), each with a link to its page, its
    activation, that activation's percentile among its references, its virtual neuron (or why none), the
    distance to that virtual neuron's centroid and its label."""
    rows = []
    for neuron in image_analysis.top:
        nd = store_access.neuron_data(run, neuron)
        k_here = min(k, nd.n_references) if nd is not None else k
        activation = image_analysis.activations[neuron]
        assignment = (
            judge(run, neuron, k_here, activation, image_analysis.circuits[neuron])
            if nd and nd.n_references
            else None
        )
        references = nd.max_activations if nd is not None else np.array([])
        rows.append(
            {
                "neuron": neuron_url(run, neuron, max(k_here, 1)),
                "activation": activation,
                "percentile of its references": analysis.activation_percentile(activation, references),
                "virtual neuron": verdict_label(assignment),
                "of k": k_here,
                "distance": None if assignment is None else float(assignment.distances[assignment.nearest]),
                "unlike any circuit": None if assignment is None else assignment.unlike_any_circuit,
                "label": None
                if assignment is None
                else virtual_neuron_label(run, neuron, k_here, assignment.nearest),
            }
        )
    return pd.DataFrame(rows)


def show_unlike_any_circuit(neuron: int, judged: analysis.Assignment) -> None:
    """A flag when the image's circuit lies beyond every virtual neuron's radius, with the distances."""
    if not judged.unlike_any_circuit:
        return
    nearest = judged.nearest
    lead = (
        f"Neuron {neuron} responds to this image by a route none of its references took"
        if judged.fires
        else f"Neuron {neuron} hardly responds to this image, and by a route none of its references took"
    )
    st.warning(
        f"**Unlike any circuit.** {lead}: its circuit is {judged.distances[nearest]:.4f} from the nearest "
        f"centroid ({figures.vn_name(nearest)}), whose references lie within {judged.radii[nearest]:.4f} "
        f"(95 %); it is beyond every virtual neuron's radius ({judged.radius_ratio:.1f}× the closest one).",
        icon=":material/explore_off:",
    )


def show_verdict(
    neuron: int, k: int, activation: float, refs: np.ndarray, judged: analysis.Assignment
) -> None:
    """A green box only for an assignment that counts; otherwise a warning that says why it does not."""
    show_unlike_any_circuit(neuron, judged)
    nearest = figures.vn_name(judged.nearest)
    ordered = np.sort(judged.distances)
    if judged.counts:
        runner_up = f"; the next is at {ordered[1]:.4f}" if len(ordered) > 1 else ""
        st.success(
            f"Assigned to **{nearest}** of {k} (nearest centroid, distance "
            f"{judged.distances[judged.nearest]:.4f}{runner_up})."
        )
        return
    reasons = []
    if not judged.fires:
        reasons.append(
            f"neuron {neuron} does not fire on this image: its activation {activation:.3f} is below that of "
            f"its weakest reference ({refs.min():.3f}), so the circuit explains a response the neuron "
            "hardly gives"
            if len(refs)
            else f"neuron {neuron} does not fire on this image (activation {activation:.3f})"
        )
    if judged.runner_up is not None:
        reasons.append(
            f"the nearest two centroids are within {analysis.TIE_MARGIN:.0%} of each other ({nearest} at "
            f"{judged.distances[judged.nearest]:.4f}, {figures.vn_name(judged.runner_up)} at "
            f"{judged.distances[judged.runner_up]:.4f}), so the image sits on their boundary"
        )
    st.warning(
        "No assignment: " + "; and ".join(reasons) + f". The nearest virtual neuron, {nearest}, is shown "
        "for comparison only.",
        icon=":material/help:",
    )


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
        ui.image(
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
        judged = judge(run, neuron, k, activation, image_analysis.circuits[neuron])
        percentile = analysis.activation_percentile(activation, refs)
        if percentile is not None:
            cols[1].metric(
                "Percentile among its references",
                f"{percentile:.0f} %",
                help=(
                    f"Share of the neuron's {len(refs)} references (the dataset images that activate it "
                    f"most) that this image activates it at least as much as; theirs span {refs.min():.2f} – "
                    f"{refs.max():.2f}."
                ),
            )
        if judged is None:
            st.warning("This neuron has too few references to split into virtual neurons.")
        else:
            show_verdict(neuron, k, activation, refs, judged)
            st.plotly_chart(
                figures.distances_figure(judged.distances, judged.nearest, judged.radii),
                key=f"dist_{key or upload.sha256}_{neuron}_{k}",
            )
    circuit_col, vn_col = st.columns([2, 3])
    with circuit_col:
        st.html(
            "<div style='font-size:14px;margin-bottom:4px'><b>This image's circuit</b> · PURE attribution "
            f"of neuron {neuron} to the <code>{html_text(meta.lower_layer)}</code> channels "
            "(largest entries)</div>"
            + figures.circuit_html(image_analysis.circuits[neuron], 8, "#555555", meta.lower_layer)
        )
    with vn_col:
        if judged is not None:
            index = judged.nearest
            size = int(analysis.clustering(run, neuron, k, "pure").sizes[index])
            role = "" if judged.counts else "the nearest virtual neuron, "
            st.markdown(
                f"**References of {role}{figures.vn_name(index)}** ({size} of neuron {neuron}'s references)"
            )
            sheet = sheets.reference_sheet(
                run, neuron, k, "pure", index, columns=6, tile_px=sheets.tile_px(run, neuron)
            )
            if sheet is not None:
                ui.image(sheet, width="content")
    st.markdown(
        f"**Neurons this image activates most** (among the run's {len(image_analysis.activations)}, "
        "relative to each neuron's weakest reference)"
    )
    st.dataframe(
        top_neurons_table(run, image_analysis, k),
        hide_index=True,
        column_config={
            "neuron": st.column_config.LinkColumn(
                "neuron", display_text=r"&neuron=(\d+)", help="Open the neuron's page"
            ),
            "activation": st.column_config.NumberColumn(format="%.3f"),
            "percentile of its references": st.column_config.NumberColumn(
                format="%.0f %%",
                help="share of the neuron's references that this image activates it at least as much as",
            ),
            "distance": st.column_config.NumberColumn(
                format="%.4f", help="from this image's circuit to the (nearest) virtual neuron's centroid"
            ),
            "unlike any circuit": st.column_config.CheckboxColumn(
                "unlike any circuit",
                help="the image's circuit lies farther from every centroid than 95 % of that virtual "
                "neuron's own references: the neuron responds by a route none of its references took",
            ),
            "label": st.column_config.TextColumn(
                help="the (nearest) virtual neuron's most frequent over-represented label and its share: the "
                "dataset's labels where the run has them, else the model's predicted classes, else CLIP's "
                "names"
            ),
        },
    )


def set_example(label: str | None) -> None:
    """Button callback: the example image to analyse (None: none)."""
    st.session_state["upload_example"] = label


def choose_example(run: RunRef, neuron: int, expanded: bool) -> store_access.ExampleImage | None:
    """Example images to try (`app.store_access.example_images`), each with a button; the chosen one (kept
    in the session by its label) or None."""
    examples = store_access.example_images(run, neuron, N_EXAMPLES)
    if not examples:
        return None
    by_label = {example.label: example for example in examples}
    with st.expander("No image at hand? Try one of these", expanded=expanded):
        st.caption(
            f"Two of neuron {neuron}'s own references (where an assignment is expected) and references of "
            "other neurons, held out from this one: it barely fires on them, and the table of neurons each "
            "image activates most links to the ones that do."
        )
        columns = st.columns(len(examples))
        for column, example in zip(columns, examples, strict=True):
            with column:
                ui.image(example.data, width=96, caption=example.label)
                st.button(
                    "Try",
                    key=f"example_{example.label}",
                    on_click=set_example,
                    args=(example.label,),
                )
        if st.session_state.get("upload_example") in by_label:
            st.button("Clear the example", key="example_clear", on_click=set_example, args=(None,))
    return by_label.get(st.session_state.get("upload_example"))


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
    example = choose_example(run, neuron, expanded=not files)
    if not files and example is None:
        st.caption(
            "The image is resized and centre-cropped like the model's inputs, then analysed with the same "
            "code as the precomputed references."
        )
        return
    problem = model_cache.model_problem(run)
    if problem:
        st.error(problem, icon=":material/error:")
        return
    matches = model_cache.model_matches_run(run)
    if matches is False:
        st.warning(
            "The model loaded for this run has other weights than the one precompute used (fingerprint "
            "mismatch; e.g. the demo net was retrained since). Uploads are analysed with the loaded model, "
            "so their circuits may not match the stored references; recompute the run with "
            f"`{ui.PRECOMPUTE_COMMAND}`.",
            icon=":material/warning:",
        )
    images = [(example.label, example.data, f"example {example.label}")] if example is not None else []
    images += [(file.name, file.getvalue(), file.file_id) for file in files or ()]
    for name, data, key in images:
        st.divider()
        st.subheader(code(name, max_chars=120))
        try:  # the name only labels the messages, which are markdown
            upload = uploads.decode_upload(code(name, max_chars=120), data)
        except uploads.UploadError as error:
            st.error(str(error), icon=":material/block:")
            continue
        for note in upload.notes:
            st.caption(f"Note: {note}.")
        try:
            show_analysis(run, upload, neuron, k, key=key)
        except Exception as error:  # noqa: BLE001
            failure = code(f"{type(error).__name__}: {error}", max_chars=300)
            st.error(f"Analysing {code(name, max_chars=120)} failed: {failure}")


if __name__ == "__main__":
    render()
