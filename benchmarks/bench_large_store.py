"""The dashboard and the store at the paper's size: 2048 neurons x 100 references (synthetic values).

    python benchmarks/bench_large_store.py          # writes /tmp/pure-large/large if missing, then measures
    python benchmarks/bench_large_store.py --store DIR --neurons 2048 --repeats 3

Reports: the time to write the store (`pure_explorer.large_store`), its bytes per neuron by record kind and
on disk in all (issue target: <= 2.5 MB per neuron), the server script time of the overview and of a
neuron page (`streamlit.testing.v1.AppTest`, first run in this process and reruns; median of --repeats), and
of a label search over every virtual neuron (`app.search.label_hits` alone, and the overview rerun with the
query typed; issue 15's target: < 300 ms), and of a free-text CLIP search: `app.search.clip_hits` over every
virtual neuron's CLIP direction, and the query's text features from ViT-B-32 (random weights: the same
computation as the OpenAI weights the store names, which cannot be downloaded here).
Absolute figures depend on the machine's load, which is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench_app import pages_script

from pure_explorer.large_store import write_large_store
from store import RunStore, schema

KINDS = (schema.PureVectors, schema.ActivationVectors, schema.Embeddings, schema.CropBoxes, schema.Crops,
         schema.Thumbnails, schema.NeuronScores, schema.UmapCoordinates, schema.ReferenceClipLabels,
         schema.VirtualNeuronClipCentroids)


def _bytes(record) -> int:
    """Payload bytes of a record's arrays and images (pickling overhead left out)."""
    value = record.to_store()
    if isinstance(value, list):
        return sum(len(item) for item in value)
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(record, schema.NeuronScores):
        return sum(c.nbytes for c in record.centroids.values()) + record.embedding_labels.nbytes
    return sum(v.nbytes for v in value.values() if hasattr(v, "nbytes"))


def store_size(directory: Path, sample: int = 32) -> dict:
    """Bytes on disk per neuron, and the payload per neuron of each per-neuron record (mean over a sample)."""
    with RunStore.open(directory) as store:
        references = store.read(schema.References)
        neurons = references.neuron_ids
        picked = neurons[:: max(1, len(neurons) // sample)][:sample]
        per_kind = {kind.KEY: statistics.mean(_bytes(store.read(kind, n)) for n in picked) for kind in KINDS}
        images = statistics.mean(len(store.read(schema.ReferenceImage, int(i)).data)
                                 for i in references.indices[0][:20])
        unique = len(set(references.indices.ravel().tolist()))
    disk = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return {"disk_bytes": disk, "disk_mb_per_neuron": disk / len(neurons) / 1e6,
            "payload_kb_per_neuron": {k: round(v / 1e3, 1) for k, v in per_kind.items()},
            "reference_images": {"unique": unique, "mean_kb": round(images / 1e3, 1),
                                 "kb_per_neuron": round(unique * images / len(neurons) / 1e3, 1)}}


def page_times(root: Path, params: dict[str, str], repeats: int) -> dict:
    """Server script seconds of a page: the first run in a fresh AppTest, then reruns of the same page."""
    from streamlit.testing.v1 import AppTest

    os.environ["PURE_RUNS_DIR"] = str(root)
    first, rerun = [], []
    for _ in range(repeats):
        at = AppTest.from_file(str(pages_script()), default_timeout=600)
        at.query_params = dict(params)
        start = time.perf_counter()
        at.run()
        first.append(time.perf_counter() - start)
        if at.exception or not at.title:
            raise RuntimeError(f"the page did not render: {[e.value for e in at.exception]}")
        start = time.perf_counter()
        at.run()
        rerun.append(time.perf_counter() - start)
    return {"first_s": round(statistics.median(first), 3), "rerun_s": round(statistics.median(rerun), 3)}


def search_times(root: Path, queries: list[str], repeats: int) -> dict:
    """Label search: `label_hits` alone (index already read) and the overview rerun with each query typed."""
    from streamlit.testing.v1 import AppTest

    from app.search import label_hits

    os.environ["PURE_RUNS_DIR"] = str(root)
    directory = next(p for p in root.iterdir() if (p / "cache.db").is_file())
    with RunStore.open(directory) as store:
        index = store.read(schema.LabelIndex)
        names = {"predicted": store.read(schema.ClassNames).names,
                 "data": (store.read(schema.DatasetLabelNames) or schema.DatasetLabelNames(())).names,
                 "clip": (store.read(schema.ClipLabelNames) or schema.ClipLabelNames(())).names}
    function, page, hits = [], [], {}
    at = AppTest.from_file(str(pages_script()), default_timeout=600)
    at.run()
    for query in queries:
        for _ in range(repeats):
            start = time.perf_counter()
            hits[query] = len(label_hits(index, names, query))
            function.append(time.perf_counter() - start)
            start = time.perf_counter()
            at.text_input(key="ranking_search").set_value(query).run()
            page.append(time.perf_counter() - start)
            at.text_input(key="ranking_search").set_value("").run()
    return {"index_rows": int(len(index.label)), "hits": hits,
            "label_hits_s": round(statistics.median(function), 4),
            "overview_with_query_s": round(statistics.median(page), 3)}


def clip_search_times(directory: Path, queries: list[str], repeats: int) -> dict:
    """Free-text search: the query's CLIP text features (ViT-B-32, random weights, CPU) and `clip_hits`
    over the run's `ClipCentroidIndex` (read once, as the app caches it)."""
    import numpy as np

    from app.search import clip_hits
    from pure_core.clip_labels import make_clip_probe

    with RunStore.open(directory) as store:
        start = time.perf_counter()
        index = store.read(schema.ClipCentroidIndex)
        read_s = time.perf_counter() - start
    probe = make_clip_probe("open_clip:ViT-B-32/none")
    probe.encode_texts(["warm-up"])
    text, search = [], []
    for query in queries:
        for _ in range(repeats):
            start = time.perf_counter()
            vector = probe.encode_texts([query])[0]
            text.append(time.perf_counter() - start)
            start = time.perf_counter()
            hits = clip_hits(index, vector)
            search.append(time.perf_counter() - start)
            assert len(hits) == 50 and np.all(np.diff(hits["similarity"]) <= 0)
    return {"index_rows": int(len(index.neuron)), "index_mb": round(index.vectors.nbytes / 1e6, 1),
            "index_read_s": round(read_s, 3), "text_features_s": round(statistics.median(text), 4),
            "clip_hits_s": round(statistics.median(search), 4),
            "overview_with_new_query_s": overview_with_clip(directory.parent, queries, repeats)}


def overview_with_clip(root: Path, queries: list[str], repeats: int) -> float:
    """The overview's server script with a query typed that no earlier run cached: label hits, CLIP's text
    features of the query and its CLIP hits, the ranking filtered. The store names the OpenAI ViT-B-32,
    which cannot be downloaded here: this process builds it with random weights (the same computation)."""
    from streamlit.testing.v1 import AppTest

    from pure_core import clip_labels

    build = clip_labels.make_clip_probe
    clip_labels.make_clip_probe = lambda spec, **kw: build(spec.replace("/openai", "/none"), **kw)
    os.environ["PURE_RUNS_DIR"] = str(root)
    at = AppTest.from_file(str(pages_script()), default_timeout=600)
    at.run()
    at.text_input(key="ranking_search").set_value("warm-up: the model loads once per server").run()
    times = []
    try:
        for n in range(repeats):
            for query in queries:
                start = time.perf_counter()
                at.text_input(key="ranking_search").set_value(f"{query} {n}").run()  # new text: not cached
                times.append(time.perf_counter() - start)
                if at.exception or not any("look like" in m.value for m in at.markdown):
                    raise RuntimeError(f"no CLIP hits: {[e.value for e in at.exception]}")
    finally:
        clip_labels.make_clip_probe = build
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/pure-large/large", help="store (written when missing)")
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    directory = Path(args.store)
    report: dict = {"load_average": os.getloadavg()}
    if not (directory / "cache.db").is_file():
        start = time.perf_counter()
        write_large_store(directory, n_neurons=args.neurons)
        report["write_s"] = round(time.perf_counter() - start, 1)
    report["size"] = store_size(directory)
    report["overview"] = page_times(directory.parent, {}, args.repeats)
    report["neuron_page"] = page_times(directory.parent, {"page": "neuron", "neuron": "7", "k": "2"},
                                       args.repeats)
    report["label_search"] = search_times(directory.parent, ["cat", "dog", "espresso", "tabby", "striped"],
                                          args.repeats)
    report["clip_search"] = clip_search_times(directory, ["dog snout", "striped fur", "a red wheel"],
                                              args.repeats)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
