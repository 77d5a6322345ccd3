"""The dataset kind "photos": crops of the photographs shipped by scikit-image and scikit-learn, the same
image for an index whatever the order or process, every photograph used, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from torchvision.transforms.functional import pil_to_tensor

from pure_core.sources import DatasetError, dataset_config_from_string, iterate_batches, open_source
from sample_photos.source import PHOTOGRAPHS, PhotoSource, load_photograph


def test_every_packaged_photograph_loads_as_colour():
    for name in PHOTOGRAPHS:
        photo = load_photograph(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 256 and photo.std() > 10, name  # a real picture, not a flat field


def test_an_index_names_one_image_in_any_order_and_the_seed_changes_it():
    source = PhotoSource(40, seed=0, size_px=96)
    forward = [np.asarray(source.load(i)) for i in range(40)]
    assert all(np.array_equal(np.asarray(source.load(i)), forward[i]) for i in reversed(range(40)))
    assert np.array_equal(np.asarray(PhotoSource(40, 0, 96).load(7)), forward[7])  # a fresh source
    assert not np.array_equal(np.asarray(PhotoSource(40, 1, 96).load(7)), forward[7])
    assert all(image.shape == (96, 96, 3) for image in forward)
    assert len({image.tobytes() for image in forward}) == 40  # no two crops alike
    assert [source.photograph(i) for i in range(len(PHOTOGRAPHS))] == list(PHOTOGRAPHS)
    assert source.dataset_label(3) == source.photograph(3)  # a crop's label: the photograph it comes from


def test_registered_as_a_dataset_kind_and_batches_in_worker_processes():
    config = dataset_config_from_string("photos:12")
    assert (config.kind, config.n_images) == ("photos", 12)
    source = open_source(config)
    assert len(source) == 12 and source.fingerprint()["photographs"] == list(PHOTOGRAPHS)
    batches = list(iterate_batches(source, range(12), pil_to_tensor, batch_size=5, workers=2))
    indices = np.concatenate([b[1] for b in batches])
    assert indices.tolist() == list(range(12))
    assert np.array_equal(batches[1][0][0].permute(1, 2, 0).numpy(), np.asarray(source.load(5)))


def test_bad_sizes_are_refused():
    with pytest.raises(DatasetError, match="n_images >= 1"):
        PhotoSource(0, 0, 64)
    with pytest.raises(DatasetError, match="size_px >= 8"):
        PhotoSource(4, 0, 4)


def test_the_photos_preset_runs_lite0_on_the_photographs_judged_by_another_network():
    from precompute.config import resolve_config

    config = resolve_config(preset="photos")
    assert config.dataset.kind == "photos" and config.model.name == "efficientnet-lite0"
    assert config.embedder == "efficientnet-lite2"  # shares no weights with the analysed network
