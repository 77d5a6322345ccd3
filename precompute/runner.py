"""The one chunk loop every stage uses: cut the work as the first run did, skip what is committed, commit the
rest one chunk at a time.

A stage's work is ``n_items`` items (images, neurons, reference images) cut into consecutive chunks. Each
chunk's outputs and its marker go into the store in one transaction (`ChunkRunner.commit`), so a kill (even
SIGKILL) loses at most the chunk in flight, and a resumed run redoes exactly that chunk with the same inputs.
The chunk size and batch size are recorded at the stage's first start (``layout:<part>``) and reused on
resume: chunk markers count chunks, and equal batches give equal floats. Runtime flags (``--batch-size``,
``--chunk-neurons``) therefore only apply to parts that have not started yet.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from precompute.job import Job
from store import STAGES

__all__ = ["KILL_ENV", "ChunkRunner", "chunk_ranges", "clear_bookkeeping"]

KILL_ENV = "PURE_PRECOMPUTE_KILL_AT"  # tests: "<part>:<chunk>" SIGKILLs inside that chunk's transaction


def chunk_ranges(n: int, size: int) -> list[range]:
    """Consecutive ranges covering ``range(n)``, ``size`` long (the last one shorter)."""
    return [range(start, min(n, start + size)) for start in range(0, n, max(1, size))]


def stage_label(name: str, title: str) -> str:
    """A stage's progress label, e.g. ``"3/8 crops"``: its place in `store.STAGES` and a title."""
    return f"{STAGES.index(name) + 1}/{len(STAGES)} {title}"


class ChunkRunner:
    """Chunks of one part of a stage (``part``: the marker name, e.g. ``"crops"`` or ``"images"``).

    ``weight(chunk)`` is the chunk's share of the progress bar (default: its length, in ``unit``). Use::

        runner = ChunkRunner(job, "crops", n_neurons, job.chunk_neurons, "3/8 crops", "crop", weight)
        for chunk_id, chunk in runner.pending():
            outputs = ...                       # compute; runner.advance(n) for progress inside a chunk
            with runner.commit(chunk_id):
                store.put(...)                  # all of a chunk's writes, atomically with its marker
        runner.close()
    """

    def __init__(self, job: Job, part: str, n_items: int, chunk_size: int, desc: str, unit: str,
                 weight: Callable[[range], int] = len):
        self.job, self.part, self.weight = job, part, weight
        self.chunks = chunk_ranges(n_items, self._layout(chunk_size))
        self.done = [job.store.is_chunk_done(part, c) for c in range(len(self.chunks))]
        from tqdm.auto import tqdm

        group = job.group
        mine = [c for c in range(len(self.chunks)) if group.takes(c)]
        if group.world > 1:
            desc = f"{desc} [{len(mine)} of {len(self.chunks)} chunks on rank 0 of {group.world}]"
        self.bar = tqdm(total=sum(weight(self.chunks[c]) for c in mine), desc=desc, unit=unit,
                        initial=sum(weight(self.chunks[c]) for c in mine if self.done[c]),
                        disable=not (job.progress and group.is_main), dynamic_ncols=True, leave=True,
                        mininterval=0.5)

    def _layout(self, chunk_size: int) -> int:
        """The chunk size (and, into ``job.batch_size``, the batch size) recorded at the part's first run."""
        store = self.job.store
        layout = store.get(f"layout:{self.part}")
        if layout is None:
            layout = {"chunk_size": int(chunk_size), "batch_size": int(self.job.config.batch_size)}
            store.put(f"layout:{self.part}", layout)
        self.job.batch_size = layout["batch_size"]
        return layout["chunk_size"]

    @property
    def complete(self) -> bool:
        return all(self.done)

    def pending(self) -> Iterator[tuple[int, range]]:
        """``(chunk id, item range)`` of every chunk not committed yet that this process takes, in order."""
        for chunk_id, chunk in enumerate(self.chunks):
            if not self.done[chunk_id] and self.job.group.takes(chunk_id):
                yield chunk_id, chunk

    def advance(self, n: int) -> None:
        """Move the progress bar by ``n`` units inside a chunk."""
        self.bar.update(n)

    @contextmanager
    def commit(self, chunk_id: int) -> Iterator[None]:
        """Write one chunk's outputs and its marker atomically (a test hook can SIGKILL before the commit)."""
        store = self.job.store
        with store.transaction():
            yield
            store.mark_chunk_done(self.part, chunk_id)
            if os.environ.get(KILL_ENV) == f"{self.part}:{chunk_id}":
                os.kill(os.getpid(), signal.SIGKILL)
        self.done[chunk_id] = True

    def close(self) -> None:
        """End the part: the progress bar closes, and every process waits until all chunks are committed."""
        self.bar.close()
        self.job.group.barrier()
        self.done = [self.job.store.is_chunk_done(self.part, c) for c in range(len(self.chunks))]


def clear_bookkeeping(job: Job, parts: tuple[str, ...]) -> None:
    """Drop the chunk markers and layouts of ``parts`` (inside the caller's transaction): a finished store
    keeps only results."""
    store = job.store
    for part in parts:
        chunk = 0
        while store.is_chunk_done(part, chunk):
            store.delete(f"chunk:{part}:{chunk}")
            chunk += 1
        store.delete(f"layout:{part}")
