"""Image codecs of the run store: every image goes in as WEBP bytes and comes out as an RGB PIL image."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from PIL import Image

__all__ = ["EMBED_QUALITY", "LOSSLESS_MAX_PIXELS", "THUMB_QUALITY", "decode_image", "decode_pixels",
           "encode_image", "reference_quality"]

EMBED_QUALITY = 90  # WEBP quality of reference images and of crops for embedding
THUMB_QUALITY = 85  # WEBP quality of display thumbnails
# Reference images up to this many pixels are stored exactly. On the 64 px synthetic world, WEBP at quality
# 90 lowered the analysed channels' activation on their top reference by 3.8 % (median; 26 % at most), and
# one of 48 fell below its neuron's weakest reference, so the app's upload of a stored reference said the
# neuron does not fire. Lossless costs about 6 kB per 64 px image (1.8 kB lossy).
LOSSLESS_MAX_PIXELS = 128 * 128


def encode_image(image: Image.Image, quality: int | None) -> bytes:
    """WEBP bytes of an image as RGB (deterministic for equal pixels); ``quality=None``: lossless."""
    buffer = io.BytesIO()
    options = {"lossless": True} if quality is None else {"quality": quality}
    image.convert("RGB").save(buffer, format="WEBP", method=4, **options)
    return buffer.getvalue()


def reference_quality(image: Image.Image) -> int | None:
    """The WEBP quality a reference image is stored at: lossless (None) up to `LOSSLESS_MAX_PIXELS`."""
    return None if image.width * image.height <= LOSSLESS_MAX_PIXELS else EMBED_QUALITY


def decode_image(data: bytes) -> Image.Image:
    """The RGB image stored as ``data`` (WEBP, or any format PIL reads)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def decode_pixels(blobs: Iterable[bytes]) -> np.ndarray:
    """The images stored as ``blobs`` (all of one size, as reference images are) as one ``(n, H, W, 3)``
    uint8 array, the input of `pure_core.models.Preprocessing.from_pixels`."""
    return np.stack([np.asarray(decode_image(data)) for data in blobs])
