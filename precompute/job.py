"""One precompute run's shared state (`Job`) and the error a stage raises when the run cannot go on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from precompute.config import RunConfig
from precompute.distributed import Group
from pure_core.embed import Embedder
from pure_core.models import Preprocessing
from pure_core.sources import ImageSource, UnreadableImageError
from store import RunStore

__all__ = ["Job", "PrecomputeError", "format_seconds"]


class PrecomputeError(RuntimeError):
    """A run cannot go on; the message is one line for the user."""


@dataclass
class Job:
    """One precompute run: config, store, model, data and runtime settings shared by the stages."""

    config: RunConfig
    store: RunStore
    model: torch.nn.Module
    preprocess: Preprocessing
    source: ImageSource
    neurons: list[int]
    device: torch.device
    embedder_factory: Callable[[], Embedder]
    categories: list[str] | None = None  # the model's class names: stage 2 stores its predictions when known
    progress: bool = True
    checkpoint_every: int = 8  # stage 1: batches per checkpoint
    chunk_neurons: int = 16  # stages 3-5: neurons per transaction
    image_chunk: int = 64  # stage 2: reference images per transaction
    attribution_strategy: str = "auto"  # stage 2: "per_pair", "per_image" or "auto"
    workers: int = 0
    log: Callable[[str], None] = print
    seconds: dict[str, float] = field(default_factory=dict)
    group: Group = field(default_factory=Group)  # this process among the job's processes (torchrun)
    batch_size: int = 0  # the current stage's recorded batch size (`precompute.runner.ChunkRunner`)
    _embedder: Any = None

    @property
    def embedder(self) -> Embedder:
        """The embedder, built on first use (a resumed run past stage 4 never loads it)."""
        if self._embedder is None:
            self._embedder = self.embedder_factory()
        return self._embedder

    def load_reference(self, index: int) -> Image.Image:
        """Reference image ``index`` of the source; `PrecomputeError` if it became unreadable."""
        try:
            return self.source.load(int(index))
        except UnreadableImageError as error:
            raise PrecomputeError(f"reference image became unreadable: {error}") from error

    def reference_inputs(self, indices: Sequence[int]) -> torch.Tensor:
        """The model's inputs ``(n, 3, H, W)`` (on the CPU) for reference images ``indices``, in order and
        repeats allowed: each image is loaded and preprocessed once."""
        tensors = {int(i): self.preprocess.to_tensor(self.load_reference(i)) for i in dict.fromkeys(indices)}
        return torch.stack([tensors[int(i)] for i in indices])


def format_seconds(seconds: float) -> str:
    """``12.3 s`` or ``4.5 min``."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
