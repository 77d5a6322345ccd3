"""Uploaded images: safe decoding, and the analysis of one image against a run's neurons.

`decode_upload` never lets a bad file crash the page: it raises `UploadError` with a message for the user
for files that are too large, not PNG/JPEG/WEBP, truncated or corrupt, decompression bombs (more than
`MAX_PIXELS` pixels, checked from the header before decoding; `PIL.Image.MAX_IMAGE_PIXELS` is lowered to
the same limit as a second guard, and every message quotes this limit, not PIL's), smaller than
`MIN_SIDE_PX` on a side (the model upsamples such an image ~30x into a blur that says nothing about a
neuron), or more elongated than `MAX_ASPECT_RATIO`:1 (the model resizes the shorter side to ~256 px, so a
1 x 4000 px strip of a few bytes would become a 256 x 1,024,000 px image, ~1.5 GB). Every image is decoded
in full with `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` off, so a truncated body is refused; a JPEG whose
entropy-coded body is corrupt decodes without an error in Pillow (libjpeg only warns and fills in garbled
blocks), so JPEGs are decoded a second time by libjpeg through torchvision and refused when it warns.
It applies the EXIF orientation and converts every mode (16-bit, CMYK, palette, alpha, ...) to 8-bit RGB,
alpha composited on white.

`analyse_image` runs the same `pure_core` code path as precompute on one image: the layer's activations
(max over space, the reference-selection statistic), the input heatmap of the chosen neuron, and the PURE
circuit vectors ``(C_lower,)`` of the chosen neuron and of the neurons the image activates most.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_PIXELS = 40_000_000  # e.g. 8000 x 5000
MAX_ASPECT_RATIO = 100  # longer side / shorter side; bounds the model's resize (shorter side -> ~256 px)
MIN_SIDE_PX = 8  # smaller images are refused: upsampled to the model's ~224 px they carry no pattern
ALLOWED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP"}
ACCEPTED_EXTENSIONS = ["png", "jpg", "jpeg", "webp"]

if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated body raises instead of being padded with grey


class UploadError(ValueError):
    """An uploaded file cannot be used; the message is meant for the user."""


@dataclass(frozen=True)
class UploadedImage:
    """A decoded upload: 8-bit RGB ``image``, its ``sha256`` (cache key) and notes on what was converted."""

    name: str
    image: Image.Image
    sha256: str
    original_size: tuple[int, int]
    notes: tuple[str, ...] = ()


def decode_upload(
    name: str,
    data: bytes,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
    min_side_px: int = MIN_SIDE_PX,
) -> UploadedImage:
    """Decode one uploaded file into an RGB image; raises `UploadError` with a readable message."""
    label = name or "the file"
    if len(data) == 0:
        raise UploadError(f"{label} is empty.")
    if len(data) > max_bytes:
        raise UploadError(f"{label} is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind = ALLOWED_FORMATS.get(image.format or "")
            if kind is None:
                raise UploadError(
                    f"{label} is a {image.format or 'unknown'} image; upload PNG, JPEG or WEBP."
                )
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    f"{label} has {width} x {height} = {width * height / 1e6:.0f} megapixels; "
                    + _pixel_limit(max_pixels)
                )
            if max(width, height) > max_aspect_ratio * max(min(width, height), 1):
                raise UploadError(
                    f"{label} is {width} x {height} px, more elongated than {max_aspect_ratio:.0f}:1; the "
                    "model resizes the shorter side and centre-crops a square, so crop it to a less extreme "
                    "shape first."
                )
            if min(width, height) < min_side_px:
                raise UploadError(
                    f"{label} is {width} x {height} px; images need at least {min_side_px} px on each side "
                    "(the model scales the image to ~224 px, so a smaller one becomes a featureless blur)."
                )
            if getattr(image, "n_frames", 1) > 1:
                notes.append(f"animated {kind}: the first frame is used")
                image.seek(0)
            image.load()
            damage = libjpeg_warning(data) if kind == "JPEG" else None
            if damage:
                raise UploadError(
                    f"{label} could not be decoded (truncated or corrupt?): its JPEG body is damaged "
                    f"(libjpeg: {damage})."
                )
            transposed = ImageOps.exif_transpose(image)
            if transposed is not None and transposed is not image:
                if transposed.size != image.size or _orientation(image) in range(2, 9):
                    notes.append("rotated by its EXIF orientation")
                image = transposed
            rgb, note = to_rgb(image)
            if note:
                notes.append(note)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UploadError(
            f"{label} was refused as a possible decompression bomb; " + _pixel_limit(max_pixels)
        ) from error
    except UnidentifiedImageError as error:
        raise UploadError(f"{label} is not an image PIL can read; upload PNG, JPEG or WEBP.") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UploadError(f"{label} could not be decoded (truncated or corrupt?): {error}") from error
    return UploadedImage(
        name=name,
        image=rgb,
        sha256=hashlib.sha256(data).hexdigest(),
        original_size=(width, height),
        notes=tuple(notes),
    )


def _pixel_limit(max_pixels: int) -> str:
    """The app's own pixel limit in words (PIL's messages quote twice ``Image.MAX_IMAGE_PIXELS``)."""
    return (
        f"the limit is {max_pixels / 1e6:.0f} megapixels (a guard against decompression bombs). "
        "Downscale it first."
    )


_STDERR_LOCK = threading.Lock()


def libjpeg_warning(data: bytes) -> str | None:
    """libjpeg's first warning when decoding the JPEG ``data`` ("Corrupt JPEG data: bad Huffman code"), or
    None for a clean decode. libjpeg prints its warnings to the process's stderr and neither Pillow nor
    torchvision report them, so file descriptor 2 is redirected for the few milliseconds of the decode
    (under a lock); whatever else was written meanwhile is passed on to the real stderr."""
    import torch
    from torchvision.io import decode_jpeg

    with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's deprecation notice for its image codecs
                decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except RuntimeError as error:
            return str(error).strip() or "the decoder failed"
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        lines = captured.read().decode(errors="replace").splitlines()
    found = [line for line in lines if line.startswith(("Corrupt JPEG data", "Premature end of JPEG"))]
    others = [line for line in lines if line not in found]
    if others:
        os.write(2, ("\n".join(others) + "\n").encode())
    return found[0].strip() if found else None


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF is not worth failing for
        return None


def to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB version of ``image`` and a note on what was converted (None when it already was RGB)."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:  # PNG tRNS: a transparent colour
        image = image.convert("RGBA")
    if image.mode == "RGB":
        return image.copy(), None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if values.ndim == 3:
            values = values[..., 0]
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 65535.0 * 255.0
        elif mode == "F":
            low, high = values.min(initial=0), values.max(initial=1)
            values = (values - low) / (high - low or 1.0) * 255.0
        grey = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
        return grey.convert("RGB"), f"converted from {mode} (high bit depth) to 8-bit RGB"
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert(
            "RGB"
        ), f"{mode} with transparency composited on white"
    return image.convert("RGB"), f"converted from {mode} to RGB"


# -- analysis ----------------------------------------------------------------------------------------------
@dataclass
class UploadAnalysis:
    """What one image does to a run's layer (k-independent; virtual neurons are assigned by the page).

    ``activations``: neuron -> max activation over space for every neuron of the run; ``neuron``: the chosen
    one; ``heatmap (H, W)``: its input heatmap (the run's crop method, summed over RGB) on ``model_input``
    (the resized/cropped RGB image the model saw); ``circuits``: neuron -> PURE vector ``(C_lower,)`` for the
    chosen neuron and the ``top`` neurons the image activates most (relative to their references, see
    `analyse_image`).
    """

    neuron: int
    activations: dict[int, float]
    model_input: Image.Image
    heatmap: np.ndarray
    circuits: dict[int, np.ndarray]
    top: list[int] = field(default_factory=list)


def relative_activation(activation: float, neuron: int, weakest: Mapping[int, float] | None) -> float:
    """``activation`` in units of the neuron's weakest reference activation (1: it would just become one
    of its references); the raw activation without ``weakest``; -inf for a neuron without a positive
    weakest reference (nothing to compare with: ranked last)."""
    if weakest is None:
        return activation
    scale = weakest.get(int(neuron), 0.0)
    return activation / scale if scale > 0 else float("-inf")


def analyse_image(
    loaded: Any,
    image: Image.Image,
    layer: str,
    lower_layer: str,
    neuron: int,
    run_neurons: list[int],
    top_n: int = 5,
    heatmap_method: str = "gradient_x_input",
    weakest: Mapping[int, float] | None = None,
) -> UploadAnalysis:
    """Run ``loaded`` (`pure_core.models.LoadedModel`) on ``image`` for the upload page's analysis; the input
    heatmap starts from the neuron's whole rectified map, by ``heatmap_method`` (`pure_core.heatmaps`: the
    run's crops' method, so the upload is explained as its references are).

    The ``top_n`` neurons are those the image activates most relative to ``weakest``, each neuron's weakest
    reference activation (`store.schema.References.weakest_activations`; `relative_activation`): channels
    differ in scale, and on the demo world the raw activation put the image's own class detector first for
    4 % of the images, the relative one for 53 %. Without ``weakest``, by raw activation."""
    from pure_core.activations import pooled_activations
    from pure_core.attribution import pure_attributions
    from pure_core.heatmaps import input_heatmaps_for_pairs

    model, preprocess = loaded.model, loaded.preprocess
    model_input = preprocess.geometric(image)
    device = next(model.parameters()).device
    x = preprocess.to_tensor(image).unsqueeze(0).to(device)
    maximum, _, _ = pooled_activations(model, x, layer)  # the reference-selection statistic
    pooled = maximum[0].detach().cpu().numpy()  # (C_L,)
    activations = {int(n): float(pooled[n]) for n in run_neurons if 0 <= int(n) < pooled.shape[0]}
    top = sorted(activations, key=lambda n: relative_activation(activations[n], n, weakest), reverse=True)
    top = top[:top_n]
    wanted = list(dict.fromkeys([int(neuron), *top]))
    circuits = pure_attributions(model, x, layer, lower_layer, wanted)
    circuits = np.asarray(circuits.detach().cpu().numpy() if hasattr(circuits, "detach") else circuits)[0]
    heatmap = input_heatmaps_for_pairs(model, x, layer, [int(neuron)], method=heatmap_method)
    heatmap = heatmap.detach().float().cpu().numpy()[0]
    return UploadAnalysis(
        neuron=int(neuron),
        activations=activations,
        model_input=model_input,
        heatmap=heatmap.astype(np.float32),
        circuits={n: circuits[i].astype(np.float32) for i, n in enumerate(wanted)},
        top=top,
    )
