"""Image probing ("which circuits fire") on a synthetic-world run: quality and speed (issue 15).

    python benchmarks/bench_probing.py                       # runs/demo, 200 test-split world images
    python benchmarks/bench_probing.py --run /tmp/demo-runs/demo --images 500 --k 2

For each image of the world's test split (never seen by precompute), the upload page's analysis
(`app.uploads.analyse_image`: one forward, the PURE circuits of the neurons the image activates most relative
to their weakest references), then
for each of the top 3 neurons the virtual neuron its circuit is nearest to (`app.analysis.clustering` with the
run's stored centroids) and that virtual neuron's dataset label (`app.analysis.cluster_labels`, the planted
concept of most of its references). A hit: the image's planted concept is the label of one of those top-3
virtual neurons (issue 15's target: >= 90 % of images); top-1 likewise. Seconds per image: the analysis plus
the assignments, after one warm-up image. The load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

TOP = 3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a complete precompute run of the world")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args(argv)

    from PIL import Image

    from app import analysis, model_cache, store_access
    from app.uploads import analyse_image
    from store import list_runs
    from synthetic.demo import DEMO_SIZE_PX, SPLIT_SEEDS
    from synthetic.world import SyntheticWorld

    directory = Path(args.run).resolve()
    info = next(r for r in list_runs(directory.parent) if r.directory == directory)
    run = store_access.run_ref(info)
    meta = store_access.run_details(run).meta
    names = store_access.data_label_names(run)
    order = store_access.neuron_order(run)
    loaded = model_cache.model_for(run)
    weakest = store_access.references(run).weakest_activations()  # the app ranks relative to these
    world = SyntheticWorld(args.images + 1, seed=SPLIT_SEEDS["test"], size_px=DEMO_SIZE_PX)
    load = os.getloadavg()

    def probe(index: int) -> list[str | None]:
        image = world.render(index)[0]
        result = analyse_image(loaded, Image.fromarray(image), meta.layer, meta.lower_layer, order[0], order,
                               top_n=TOP, weakest=weakest)
        labels = []
        for neuron in result.top:
            clusters = analysis.clustering(run, neuron, args.k, "pure")
            shares = analysis.cluster_labels(run, neuron, args.k, "pure", source="data")
            nearest = int(clusters.virtual_neurons.predict(result.circuits[neuron][None].astype(float))[0])
            labels.append(names[shares[nearest][0].label] if shares and shares[nearest] else None)
        return labels

    probe(args.images)  # warm-up: caches, first-call overheads
    hits_top, hits_first, seconds = 0, 0, []
    for index in range(args.images):
        start = time.perf_counter()
        labels = probe(index)
        seconds.append(time.perf_counter() - start)
        concept = world.concept_of(index)
        hits_top += concept in labels
        hits_first += bool(labels) and labels[0] == concept
    report = {
        "run": str(directory), "images": args.images, "k": args.k,
        "top3_hit_rate": round(hits_top / args.images, 4),
        "top1_hit_rate": round(hits_first / args.images, 4),
        "seconds_per_image_median": round(statistics.median(seconds), 4),
        "seconds_per_image_p90": round(sorted(seconds)[int(0.9 * (len(seconds) - 1))], 4),
        "load_average_before": load, "load_average_after": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
