"""Image codecs of the run store: every image goes in as WEBP bytes and comes out as an RGB PIL image."""

from __future__ import annotations

import io

from PIL import Image

__all__ = ["EMBED_QUALITY", "THUMB_QUALITY", "decode_image", "encode_image"]

EMBED_QUALITY = 90  # WEBP quality of reference images and of crops for embedding
THUMB_QUALITY = 85  # WEBP quality of display thumbnails


def encode_image(image: Image.Image, quality: int) -> bytes:
    """WEBP bytes of an image as RGB (deterministic for equal pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """The RGB image stored as ``data`` (WEBP, or any format PIL reads)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
