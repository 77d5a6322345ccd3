"""Precompute on several processes with torch.distributed: `torchrun --nproc-per-node N -m precompute ...`.

Every process (rank) runs the same job on the same store. Work is cut into the same chunks as in a single
process (`precompute.runner.ChunkRunner`), and rank r takes the chunks whose number is r modulo the world
size: the reference scan is sharded by dataset index (each rank keeps its own running top set, merged
exactly at the end, `pure_core.activations.TopReferences.merge`), the per-neuron stages by neurons. Each
rank commits its own chunks to the store (diskcache is safe across processes); steps that need every
chunk (merging the scan, assembling attributions, the run-wide tables, marking a stage done) run on rank 0
between barriers. Equal chunks give equal floats, so the store equals a single-process run's value for
value. A killed rank stops the job (torchrun ends the others); the same command resumes from the committed
chunks. Multi-node: torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``), e.g. under ``srun torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Group", "init_group"]


@dataclass(frozen=True)
class Group:
    """This process's place among the job's processes: ``rank`` of ``world`` (a single process: 0 of 1), and
    ``local_world`` of them on its node (which share the node's cores)."""

    rank: int = 0
    world: int = 1
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes what needs every chunk and speaks for the job (logs, progress bars)."""
        return self.rank == 0

    def takes(self, chunk_id: int) -> bool:
        """Whether this rank computes chunk ``chunk_id`` (round robin)."""
        return chunk_id % self.world == self.rank

    def barrier(self) -> None:
        """Wait until every rank got here (no-op in a single process)."""
        if self.world > 1:
            torch.distributed.barrier()

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if self.world == 1:
            return [value]
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, value)
        return gathered


def init_group(device: torch.device) -> Group:
    """The process group torchrun set up in the environment (``WORLD_SIZE`` > 1), joined with gloo on CPU and
    NCCL on CUDA; `Group()` when the job runs as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                 int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
