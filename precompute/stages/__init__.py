"""The eight precompute stages in order, each resumable, each writing its outputs into the run store.

1. `references`: top-n_ref references per neuron, then their images.
2. `attributions`: PURE circuit vectors and activation baselines.
3. `crops`: crop boxes, crops for embedding, display thumbnails.
4. `embeddings`: the crops through the embedder.
5. `scores`: polysemanticity, cluster quality per k, centroids, UMAP, the run-wide tables.
6. `clip_labels`: CLIP's zero-shot labels of the crops and the virtual neurons' CLIP directions (skipped,
   and filled in by a later run, without the weights).
7. `quantiles`: reference quantiles, per neuron a few images from activation bands below its references with
   their PURE vectors (self-contained: the same command adds it to stores made before it existed).
8. `depth`: with depth layers (`--depth-layers`, `--chain`), each neuron's circuits again at those layers and
   how well its virtual neurons separate at each (`pure_core.depth`): where the circuit splits.

Each stage cuts its work with `precompute.runner.ChunkRunner`; a finished stage keeps only its results (the
chunk markers and layouts of its parts are dropped when it is marked done). Fixed seeds, fixed order and
recorded batch boundaries make a resumed run's store equal to an uninterrupted run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from precompute.config import RunConfig
from precompute.job import Job
from precompute.runner import clear_bookkeeping
from precompute.stages import (
    attributions,
    clip_labels,
    crops,
    depth,
    embeddings,
    quantiles,
    references,
    scores,
)
from store import STAGES, RunStore

__all__ = ["STAGE_LIST", "Stage", "pending_stages", "run_stages"]


@dataclass(frozen=True)
class Stage:
    """A stage: its name in the store (`store.STAGES`), its function, the chunk parts it marks, and whether
    it still has work (default: not marked done; a stage may also redo work it had to skip)."""

    name: str
    run: Callable[[Job], None]
    parts: tuple[str, ...]
    is_pending: Callable[[RunStore, RunConfig], bool] | None = None

    def pending(self, store: RunStore, config: RunConfig) -> bool:
        if self.is_pending is not None:
            return self.is_pending(store, config)
        return not store.is_stage_done(self.name)


STAGE_LIST: tuple[Stage, ...] = tuple(
    Stage(module.__name__.rsplit(".", 1)[1], module.run, module.PARTS, getattr(module, "is_pending", None))
    for module in (references, attributions, crops, embeddings, scores, clip_labels, quantiles, depth)
)
if tuple(stage.name for stage in STAGE_LIST) != STAGES:
    raise ImportError(f"precompute's stages {[s.name for s in STAGE_LIST]} differ from store.STAGES {STAGES}")


def pending_stages(store: RunStore, config: RunConfig) -> list[str]:
    """The stages that still have work for this store, in order."""
    return [stage.name for stage in STAGE_LIST if stage.pending(store, config)]


def run_stages(job: Job) -> dict[str, float]:
    """Run every pending stage (in order); returns this process's seconds per stage run."""
    pending = set(pending_stages(job.store, job.config))
    for stage in STAGE_LIST:
        if stage.name not in pending:
            continue
        if job.store.is_stage_done(stage.name) and job.group.is_main:  # redoing work it had skipped
            job.store.reopen_stage(stage.name)
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
