"""Trivial readings of a neuron's references: what a clustering sees without any explanation method.

The synthetic world's benchmark clusters each planted channel's references by these vectors too, beside PURE
and the activation baseline: a world in which they recover the planted concepts would show nothing about
PURE (issue 14). Every reading maps ``n`` references to ``(n, D)`` float64 vectors:

- ``colour histogram``: joint RGB histogram (4 bins per channel) of the whole image;
- ``saturated histogram``: the same over the vivid pixels only (HSV saturation >= 0.5, value >= 0.3);
- ``raw pixels``: the image itself, flattened, in [0, 1];
- ``patch RGB``: mean RGB of the input square under the analysed channel's peak cell;
- ``<lower> @ peak``: the lower layer's activation vector at the peak cell (averaged over the lower-layer
  cells under it): what is present where the channel fires, read without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pure_core.hooks import as_maps, capture

__all__ = ["HISTOGRAM_BINS", "activation_at_peak", "patch_rgb", "rgb_histogram", "saturated_mask",
           "trivial_readings"]

HISTOGRAM_BINS = 4


def rgb_histogram(images: np.ndarray, mask: np.ndarray | None = None,
                  bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """(n, bins**3) joint RGB histograms of uint8 images (n, H, W, 3) over the `mask (n, H, W)` pixels
    (all pixels when None), each normalised to sum 1 (an empty mask gives zeros)."""
    quantised = (images.astype(np.int64) * bins) // 256
    codes = (quantised[..., 0] * bins + quantised[..., 1]) * bins + quantised[..., 2]
    n = len(images)
    weights = np.ones(codes.shape, dtype=np.float64) if mask is None else mask.astype(np.float64)
    rows = np.repeat(np.arange(n), codes[0].size)
    counts = np.zeros((n, bins**3))
    np.add.at(counts, (rows, codes.reshape(-1)), weights.reshape(-1))
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def saturated_mask(images: np.ndarray, min_saturation: float = 0.5, min_value: float = 0.3) -> np.ndarray:
    """(n, H, W) bool: pixels whose HSV saturation and value reach the thresholds (vivid object pixels)."""
    x = images.astype(np.float64) / 255.0
    high, low = x.max(-1), x.min(-1)
    saturation = (high - low) / np.maximum(high, 1e-9)
    return (saturation >= min_saturation) & (high >= min_value)


def patch_rgb(images: np.ndarray, positions: np.ndarray, layer_hw: tuple[int, int]) -> np.ndarray:
    """(n, 3) mean RGB of the input square under each peak cell ``positions (n, 2)`` of a ``layer_hw`` map."""
    cell_h, cell_w = images.shape[1] // layer_hw[0], images.shape[2] // layer_hw[1]
    return np.stack([image[h * cell_h:(h + 1) * cell_h, w * cell_w:(w + 1) * cell_w].reshape(-1, 3).mean(0)
                     for image, (h, w) in zip(images, positions, strict=True)]).astype(np.float64)


@torch.no_grad()
def activation_at_peak(model: nn.Module, inputs: torch.Tensor, lower_layers: Sequence[str],
                       positions: np.ndarray, layer_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per lower layer, ``(n, C)``: its activation averaged over the cells under each peak cell of the
    analysed layer (``positions (n, 2)`` in a ``layer_hw`` map), from one forward pass of ``inputs``."""
    with capture(model, lower_layers) as outputs:
        model(inputs)
    out = {}
    for name in lower_layers:
        maps = as_maps(outputs[name]).float()
        fh, fw = max(1, maps.shape[2] // layer_hw[0]), max(1, maps.shape[3] // layer_hw[1])
        cells = [maps[j, :, h * fh:(h + 1) * fh, w * fw:(w + 1) * fw].mean((1, 2))
                 for j, (h, w) in enumerate(positions.tolist())]
        out[name] = torch.stack(cells).cpu().numpy().astype(np.float64)
    return out


def trivial_readings(images: np.ndarray, positions: np.ndarray, layer_hw: tuple[int, int],
                     lower_at_peak: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every reading of the module docstring for ``images (n, H, W, 3)`` uint8 with peak cells ``positions``
    in a ``layer_hw`` map; ``lower_at_peak`` from `activation_at_peak`."""
    readings = {
        "colour histogram": rgb_histogram(images),
        "saturated histogram": rgb_histogram(images, saturated_mask(images)),
        "raw pixels": images.reshape(len(images), -1).astype(np.float64) / 255.0,
        "patch RGB": patch_rgb(images, positions, layer_hw),
    }
    readings.update({f"{name} @ peak": vectors for name, vectors in lower_at_peak.items()})
    return readings
