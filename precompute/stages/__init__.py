"""The five precompute stages in order, each resumable, each writing its outputs into the run store.

1. `references`: top-n_ref references per neuron, then their images.
2. `attributions`: PURE circuit vectors and activation baselines.
3. `crops`: crop boxes, crops for embedding, display thumbnails.
4. `embeddings`: the crops through the embedder.
5. `scores`: polysemanticity, cluster quality per k, centroids, UMAP, the run-wide tables.

Each stage cuts its work with `precompute.runner.ChunkRunner`; a finished stage keeps only its results (the
chunk markers and layouts of its parts are dropped when it is marked done). Fixed seeds, fixed order and
recorded batch boundaries make a resumed run's store equal to an uninterrupted run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from precompute.job import Job
from precompute.runner import clear_bookkeeping
from precompute.stages import attributions, crops, embeddings, references, scores
from store import STAGES

__all__ = ["STAGE_LIST", "Stage", "run_stages"]


@dataclass(frozen=True)
class Stage:
    """A stage: its name in the store (`store.STAGES`), its function and the chunk parts it marks."""

    name: str
    run: Callable[[Job], None]
    parts: tuple[str, ...]


STAGE_LIST: tuple[Stage, ...] = tuple(
    Stage(module.__name__.rsplit(".", 1)[1], module.run, module.PARTS)
    for module in (references, attributions, crops, embeddings, scores)
)
if tuple(stage.name for stage in STAGE_LIST) != STAGES:
    raise ImportError(f"precompute's stages {[s.name for s in STAGE_LIST]} differ from store.STAGES {STAGES}")


def run_stages(job: Job) -> dict[str, float]:
    """Run every stage not yet done (in order); returns this process's seconds per stage run."""
    for stage in STAGE_LIST:
        if job.store.is_stage_done(stage.name):
            continue
        start = time.perf_counter()
        stage.run(job)
        seconds = time.perf_counter() - start
        if job.group.is_main:
            with job.store.transaction():
                clear_bookkeeping(job, stage.parts)
                job.store.mark_stage_done(stage.name, seconds)
        job.group.barrier()
        job.seconds[stage.name] = seconds
    return job.seconds
