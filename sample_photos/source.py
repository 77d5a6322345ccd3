"""The dataset kind ``"photos"``: crops of the photographs shipped by scikit-image and scikit-learn.

Image ``i`` is a square crop of photograph ``i mod P`` (`PHOTOGRAPHS`, in that order) whose side is a
fraction (`SCALES`, drawn per image) of the photograph's shorter side, at a random position, mirrored with
probability 1/2, resized to ``size_px``. Everything about image ``i`` comes from a generator seeded with
``(seed, i)``, so an index names the same image in every run, in any order and in any process. The label of
an image is the photograph it was cut from (its "class folder").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from pure_core.sources import DatasetConfig, DatasetError, ImageSource

__all__ = ["DEFAULT_IMAGES", "DEFAULT_SEED", "DEFAULT_SIZE_PX", "PHOTOGRAPHS", "SCALES", "PhotoSource",
           "load_photograph", "open_photos"]

DEFAULT_IMAGES = 600
DEFAULT_SEED = 0
DEFAULT_SIZE_PX = 256
SCALES = (1.0, 0.75, 0.55, 0.4)  # crop side / the photograph's shorter side


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


def _motorcycle() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


# Colour photographs (not drawings, charts or synthetic patterns) that their packages ship in the wheel.
PHOTOGRAPHS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "cat": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _motorcycle,
    "galaxies": _skimage("hubble_deep_field"),
    "tissue": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "palace": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}


@functools.cache
def load_photograph(name: str) -> np.ndarray:
    """Photograph ``name`` of `PHOTOGRAPHS` as uint8 ``(H, W, 3)`` (loaded once per process)."""
    try:
        image = PHOTOGRAPHS[name]()
    except (ImportError, OSError) as error:
        raise DatasetError(f"the packaged photograph {name!r} cannot be loaded ({error}); the photos dataset "
                           "needs scikit-image and scikit-learn as pinned in requirements.txt") from error
    return np.ascontiguousarray(image[..., :3])


class PhotoSource(ImageSource):
    """``n_images`` crops of the packaged photographs (module docstring), ``size_px`` square, drawn with
    ``seed``."""

    kind = "photos"
    parallel_loading = True  # a crop and a bicubic resize of a large photograph cost ~20 ms

    def __init__(self, n_images: int, seed: int, size_px: int) -> None:
        if n_images < 1 or size_px < 8:
            raise DatasetError(f"the photos dataset needs n_images >= 1 and size_px >= 8, got {n_images} and "
                               f"{size_px}")
        self.n_images, self.seed, self.size_px = int(n_images), int(seed), int(size_px)
        self.names = list(PHOTOGRAPHS)

    def __len__(self) -> int:
        return self.n_images

    def photograph(self, index: int) -> str:
        """The photograph image ``index`` was cut from."""
        return self.names[index % len(self.names)]

    def load(self, index: int) -> Image.Image:
        photo = load_photograph(self.photograph(index))
        rng = np.random.default_rng((self.seed, index))
        height, width = photo.shape[:2]
        side = max(8, round(min(height, width) * SCALES[int(rng.integers(len(SCALES)))]))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return crop.resize((self.size_px, self.size_px), Image.Resampling.BICUBIC)

    def describe(self, index: int) -> str:
        return f"photos image {index} (from the {self.photograph(index)} photograph)"

    def dataset_label(self, index: int) -> str:
        """The photograph the crop was cut from (e.g. "astronaut")."""
        return self.photograph(index)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_images": self.n_images, "seed": self.seed, "size_px": self.size_px,
                "photographs": self.names, "scales": list(SCALES)}


def open_photos(config: DatasetConfig) -> PhotoSource:
    """`PhotoSource` for a dataset config (defaults: 600 images of 256 px, seed 0)."""
    return PhotoSource(DEFAULT_IMAGES if config.n_images is None else int(config.n_images),
                       DEFAULT_SEED if config.seed is None else int(config.seed),
                       DEFAULT_SIZE_PX if config.size_px is None else int(config.size_px))
