"""The trivial readings the ground-truth benchmark clusters beside PURE: hand-computed small cases."""

import numpy as np
import torch
from torch import nn

from synthetic.readings import activation_at_peak, patch_rgb, rgb_histogram, saturated_mask, trivial_readings


def test_rgb_histogram_counts_joint_bins_over_the_masked_pixels():
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[0, 0, 0] = (255, 0, 0)  # bin (3, 0, 0) = 48 with 4 bins
    images[0, 0, 1] = (255, 0, 0)
    images[0, 1, 0] = (0, 0, 255)  # bin (0, 0, 3) = 3; the fourth pixel black: bin 0
    images[1] = 130  # bin (2, 2, 2) = 42
    hist = rgb_histogram(images)
    assert hist.shape == (2, 64)
    assert hist[0, 48] == 0.5 and hist[0, 3] == 0.25 and hist[0, 0] == 0.25
    assert hist[1, 42] == 1.0
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask[0, 1, 0] = True
    masked = rgb_histogram(images, mask)
    assert masked[0, 3] == 1.0 and masked[0].sum() == 1.0
    assert not masked[1].any()  # nothing selected: zeros, not NaN


def test_saturated_mask_keeps_vivid_pixels_only():
    pixels = np.array([[[[220, 40, 40], [128, 128, 128], [30, 5, 5], [240, 240, 240]]]], dtype=np.uint8)
    assert saturated_mask(pixels).tolist() == [[[True, False, False, False]]]  # grey, too dark, white


def test_patch_rgb_averages_the_square_under_the_peak_cell():
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    images[0, 4:8, 0:4] = (10, 20, 30)  # the cell (1, 0) of a 2 x 2 map
    images[0, 4, 0] = (50, 20, 30)
    out = patch_rgb(images, np.array([[1, 0]]), (2, 2))
    np.testing.assert_allclose(out, [[(15 * 10 + 50) / 16, 20, 30]])


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.low = nn.Conv2d(1, 2, 1)  # keeps the 4 x 4 grid
        self.high = nn.Conv2d(2, 1, 2, stride=2)  # 2 x 2 map: each cell covers a 2 x 2 block of `low`

    def forward(self, x):
        return self.high(self.low(x))


def test_activation_at_peak_averages_the_lower_cells_under_the_peak():
    torch.manual_seed(0)
    model = _TwoLayers().eval()
    x = torch.randn(3, 1, 4, 4)
    positions = np.array([[0, 0], [1, 1], [0, 1]])
    out = activation_at_peak(model, x, ["low"], positions, (2, 2))["low"]
    low = model.low(x).detach()
    expected = [low[j, :, 2 * h:2 * h + 2, 2 * w:2 * w + 2].mean((1, 2)).numpy() for j, (h, w) in
                enumerate(positions)]
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-6)


def test_trivial_readings_name_every_reading_and_one_per_lower_layer():
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    readings = trivial_readings(images, np.zeros((4, 2), dtype=int), (2, 2), {"block1": np.ones((4, 5))})
    assert list(readings) == ["colour histogram", "saturated histogram", "raw pixels", "patch RGB",
                              "block1 @ peak"]
    assert readings["raw pixels"].shape == (4, 192) and readings["raw pixels"].max() <= 1.0
    assert all(v.shape[0] == 4 for v in readings.values())
