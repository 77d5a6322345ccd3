"""Feature-visualisation crops: smoothing, crop boxes, embedding crops, display thumbnails, overlays."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.segmentation import find_boundaries
from torchvision.transforms.functional import gaussian_blur

from pure_core.crops import (
    centred_box,
    crop_box,
    crop_for_display,
    crop_for_embedding,
    default_sigma,
    heatmap_overlay,
    reference_crops,
    smooth_heatmap,
    smooth_heatmaps,
)


def _rectangle(shape=(64, 64), rows=(20, 30), cols=(10, 40), value=1.0):
    heatmap = np.zeros(shape)
    heatmap[rows[0]:rows[1], cols[0]:cols[1]] = value
    return heatmap


def _image(shape=(64, 64), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def test_default_sigma_is_torchvisions():
    assert default_sigma(5) == pytest.approx(1.1)
    assert default_sigma(51) == pytest.approx(8.0)


@pytest.mark.parametrize("kernel_size", [5, 51])
def test_smoothing_is_abs_then_torchvision_blur_then_max_normalised(kernel_size):
    heatmap = np.random.default_rng(0).normal(size=(60, 70))
    blurred = gaussian_blur(torch.tensor(np.abs(heatmap))[None], kernel_size=kernel_size)[0].numpy()
    smoothed = smooth_heatmap(heatmap, kernel_size)
    np.testing.assert_allclose(smoothed, blurred / blurred.max(), atol=1e-6)
    assert smoothed.max() == pytest.approx(1.0)


def test_smoothing_accepts_torch_and_handles_edge_cases():
    heatmap = _rectangle(value=-3.0)
    np.testing.assert_allclose(smooth_heatmap(torch.tensor(heatmap), 5), smooth_heatmap(heatmap, 5))
    assert smooth_heatmap(heatmap, 5).min() >= 0  # absolute value
    assert not smooth_heatmap(np.zeros((8, 8)), 5).any()  # all-zero stays zero
    small = smooth_heatmap(np.eye(6), 51)  # kernel longer than the image is shortened
    assert small.shape == (6, 6) and np.isfinite(small).all() and small.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="odd"):
        smooth_heatmap(heatmap, 4)


def test_crop_box_of_a_bright_rectangle_spreads_by_the_blur():
    # kernel 5 (sigma 1.1) spreads a sharp edge by exactly its half-width, 2 px, above 0.01
    assert crop_box(_rectangle(), square=False) == (18, 8, 32, 42)
    # widened to a square around the same centre: 34 x 34
    assert crop_box(_rectangle()) == (8, 8, 42, 42)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [((0, 4), (0, 8, 44, 52)), ((60, 64), (20, 8, 64, 52))],
)
def test_square_widening_at_a_border_stays_inside_the_image(rows, expected):
    top, left, bottom, right = crop_box(_rectangle(rows=rows, cols=(10, 50)))
    assert (top, left, bottom, right) == expected
    assert bottom - top == right - left
    assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64


def test_square_is_capped_by_a_narrow_image():
    top, left, bottom, right = crop_box(_rectangle(shape=(20, 100), rows=(5, 15), cols=(10, 90)))
    assert (top, bottom) == (0, 20) and (left, right) == (8, 92)


def test_an_all_zero_heatmap_keeps_the_full_image():
    assert crop_box(np.zeros((30, 40))) == (0, 0, 30, 40)
    image = _image((30, 40))
    np.testing.assert_array_equal(np.asarray(crop_for_embedding(image, np.zeros((30, 40)))), image)


def test_embedding_crop_is_the_unresized_square_box():
    image = _image()
    crop = crop_for_embedding(image, _rectangle())
    np.testing.assert_array_equal(np.asarray(crop), image[8:42, 8:42])
    assert np.asarray(crop_for_embedding(Image.fromarray(image), _rectangle())).shape == (34, 34, 3)


def test_a_fixed_side_crop_is_centred_on_the_part_and_stays_inside_the_image():
    assert centred_box((8, 8, 42, 42), 24, 64, 64) == (13, 13, 37, 37)  # shrunk around the centre (25, 25)
    assert centred_box((20, 30, 24, 34), 24, 64, 64) == (10, 20, 34, 44)  # grown around (22, 32)
    assert centred_box((0, 60, 4, 64), 24, 64, 64) == (0, 40, 24, 64)  # shifted inside at the corner
    assert centred_box((0, 0, 10, 10), 24, 16, 30) == (0, 0, 16, 24)  # never beyond the image's sides
    assert crop_box(_rectangle(), side=24) == (13, 13, 37, 37)
    image = _image()
    crop = crop_for_embedding(image, _rectangle(), side=24)
    np.testing.assert_array_equal(np.asarray(crop), image[13:37, 13:37])


def test_a_low_resolution_heatmap_is_resized_to_the_image():
    heatmap = np.zeros((8, 8))
    heatmap[2, 3] = 1.0  # pixels 16..24 x 24..32 of a 64 x 64 image
    crop = np.asarray(crop_for_embedding(_image(), heatmap))
    top, left, bottom, right = crop_box(
        np.asarray(Image.fromarray(heatmap.astype(np.float32)).resize((64, 64), Image.Resampling.BILINEAR))
    )
    assert crop.shape == (bottom - top, right - left, 3)
    assert top < 20 < bottom and left < 28 < right and bottom - top < 32


def test_display_crop_has_the_requested_size():
    assert crop_for_display(_image(), _rectangle(), size_px=128).size == (128, 128)
    wide = _rectangle(shape=(20, 100), rows=(5, 15), cols=(10, 90))
    assert crop_for_display(_image((20, 100)), wide, kernel_size=5, size_px=100).size == (100, 24)


def test_display_dims_pixels_outside_the_mask_by_exactly_40_percent():
    image = _image()
    heatmap = np.zeros((64, 64))
    heatmap[2, 2] = heatmap[61, 61] = 1.0  # box = the full image, so no crop and no resize at size_px=64
    out = np.asarray(crop_for_display(image, heatmap, size_px=64, mask_threshold=0.5, contour=False))
    mask = smooth_heatmap(heatmap, 51) > 0.5
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(out[mask], image[mask])
    np.testing.assert_array_equal(out[~mask], np.rint(image[~mask] * 0.6).astype(np.uint8))


def test_display_draws_a_black_contour_around_the_mask():
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    out = np.asarray(crop_for_display(image, _rectangle(), kernel_size=5, size_px=34, contour=True))
    mask = np.zeros((64, 64), dtype=bool)
    mask[8:42, 8:42] = smooth_heatmap(_rectangle(), 5)[8:42, 8:42] > 0.01
    contour = find_boundaries(mask[8:42, 8:42], mode="inner")
    assert contour.any()
    assert (out[contour] == 0).all()
    assert (out[~mask[8:42, 8:42]] == 120).all()  # 200 * 0.6
    assert (out[mask[8:42, 8:42] & ~contour] == 200).all()


def test_display_of_an_all_zero_heatmap_is_the_plain_image():
    image = _image()
    np.testing.assert_array_equal(np.asarray(crop_for_display(image, np.zeros((64, 64)), size_px=64)), image)


def test_heatmap_overlay_tints_positive_red_and_negative_blue():
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    heatmap = np.zeros((16, 16))
    heatmap[2, 2], heatmap[12, 12] = 1.0, -1.0
    out = np.asarray(heatmap_overlay(image, heatmap)).astype(int)
    assert out.shape == (32, 32, 3)
    assert out[5, 5, 0] > 128 > out[5, 5, 2]  # red where positive
    assert out[25, 25, 2] > 128 > out[25, 25, 0]  # blue where negative
    assert (out[16, 16] == 128).all()  # untouched where zero
    np.testing.assert_array_equal(np.asarray(heatmap_overlay(image, np.zeros((4, 4)))), image)


def _heatmap_batch(n=5, shape=(64, 64), seed=3):
    """Signed noise maps with a bright blob each, one all-zero map, one tiny-valued map."""
    rng = np.random.default_rng(seed)
    maps = 0.02 * rng.normal(size=(n, *shape))
    for m in maps[:-2]:
        top, left = rng.integers(0, shape[0] - 12), rng.integers(0, shape[1] - 12)
        m[top:top + 10, left:left + 10] += rng.normal(2.0, 1.0, (10, 10))
    maps[-2] = 0.0
    maps[-1] *= 1e-9
    return maps


@pytest.mark.parametrize("kernel_size", [5, 15, 51, 201])
def test_a_stack_is_smoothed_exactly_as_map_by_map(kernel_size):
    maps = _heatmap_batch(shape=(40, 64))
    stacked = smooth_heatmaps(maps, kernel_size)
    assert stacked.dtype == np.float32 and stacked.shape == maps.shape
    for one, smoothed in zip(maps, stacked, strict=True):
        np.testing.assert_array_equal(smoothed, smooth_heatmap(one, kernel_size))
    np.testing.assert_array_equal(smooth_heatmaps(torch.from_numpy(maps).float(), kernel_size),
                                  smooth_heatmaps(maps.astype(np.float32), kernel_size))


def test_reference_crops_equal_the_crops_made_one_by_one():
    images = [_image(seed=i) for i in range(5)]
    maps = _heatmap_batch()
    low_resolution = maps[:, ::4, ::4]  # (16, 16) maps are resized to the 64 px images first
    boxes = [reference.box for reference in reference_crops(images, maps, 5, 0.1, 15, 0.01, size_px=48)]
    assert boxes == [crop_box(heatmap, 5, 0.1) for heatmap in maps]
    for heatmaps in (maps, low_resolution):
        made = reference_crops(images, heatmaps, 5, 0.1, 15, 0.01, size_px=48)
        assert len(made) == len(images)
        for image, heatmap, reference in zip(images, heatmaps, made, strict=True):
            top, left, bottom, right = reference.box
            np.testing.assert_array_equal(np.asarray(reference.crop), image[top:bottom, left:right])
            np.testing.assert_array_equal(np.asarray(reference.crop),
                                          np.asarray(crop_for_embedding(image, heatmap, 5, 0.1)))
            np.testing.assert_array_equal(np.asarray(reference.thumbnail),
                                          np.asarray(crop_for_display(image, heatmap, 15, 0.01, size_px=48)))
    fixed = reference_crops(images, maps, 5, 0.1, 15, 0.01, size_px=48, embed_side=24)
    assert [r.box for r in fixed] == [crop_box(heatmap, 5, 0.1, side=24) for heatmap in maps]
    assert all(np.asarray(r.crop).shape == (24, 24, 3) for r in fixed)
    assert reference_crops([], np.zeros((0, 64, 64))) == []
    with pytest.raises(ValueError, match="images for"):
        reference_crops(images[:2], maps)
