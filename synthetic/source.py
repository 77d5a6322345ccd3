"""The synthetic world as a dataset kind ``"world"`` (`pure_core.sources`), with its planted ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from pure_core.sources import DatasetConfig, DatasetError, GroundTruth, ImageSource
from synthetic.demo import DEMO_SIZE_PX, SPLIT_SEEDS
from synthetic.world import SyntheticWorld, oracle_embedding, polysemantic_kind

__all__ = ["WORLD_DEFAULT_IMAGES", "WORLD_DEFAULT_SEED", "WorldSource", "open_world"]

WORLD_DEFAULT_IMAGES = 3000
WORLD_DEFAULT_SEED = SPLIT_SEEDS["reference"]  # images the demo net never trained on


class WorldSource(ImageSource):
    """``n_images`` images of the synthetic world (`SyntheticWorld`) drawn with ``seed``."""

    kind = "world"
    parallel_loading = False  # drawing an image costs ~1 ms: worker processes would only add start-up

    def __init__(self, n_images: int, seed: int, size_px: int = DEMO_SIZE_PX):
        if n_images < 1:
            raise DatasetError(f"world dataset needs at least one image, got n_images={n_images}")
        self.world = SyntheticWorld(n_images, seed=seed, size_px=size_px)

    def __len__(self) -> int:
        return len(self.world)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.world.render(index)[0])

    def describe(self, index: int) -> str:
        return f"world image {index}"

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "world", **self.world.params}

    def annotation(self, index: int) -> dict[str, Any]:
        """The full ground truth of image ``index`` (objects, boxes, background, planted concept)."""
        return self.world.annotation(index)

    def dataset_label(self, index: int) -> str:
        """The planted concept of image ``index`` (e.g. "hstripes circle")."""
        return self.world.concept_of(index)

    def ground_truth(self, indices: Sequence[int], boxes: np.ndarray) -> GroundTruth:
        """The oracle embedding of each crop box (`oracle_embedding`) and each reference's planted concept."""
        annotations = [self.annotation(int(i)) for i in indices]
        embeddings = np.stack([oracle_embedding(a, box) for a, box in zip(annotations, boxes, strict=True)])
        concepts = [a["planted_concept"] for a in annotations]
        return GroundTruth(embeddings, concepts, polysemantic_kind(concepts))


def open_world(config: DatasetConfig) -> WorldSource:
    """`WorldSource` for a dataset config (defaults: 3000 images of the reference split at 64 px)."""
    return WorldSource(WORLD_DEFAULT_IMAGES if config.n_images is None else int(config.n_images),
                       WORLD_DEFAULT_SEED if config.seed is None else int(config.seed),
                       DEMO_SIZE_PX if config.size_px is None else int(config.size_px))
