"""The synthetic world: deterministic, annotated, labelled by the planted concept, fast to draw."""

import numpy as np
import pytest
import torch
from PIL import Image

from synthetic.world import (
    CLASSES,
    COLOURS,
    CONCEPTS,
    DISTRACTOR_CONCEPTS,
    PLANTED_CONCEPTS,
    SyntheticWorld,
    box_overlap_fraction,
    oracle_embedding,
    polysemantic_kind,
)

N = 200


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(N, seed=0, cache=True)


def test_the_class_table_plants_unions_and_controls():
    unions = [c for c in CLASSES if c.polysemantic]
    controls = [c for c in CLASSES if not c.polysemantic]
    assert len(unions) >= 3 and len(controls) >= 2
    assert all(len(c.concepts) == 2 for c in unions)
    assert len(set(PLANTED_CONCEPTS)) == len(PLANTED_CONCEPTS)  # a concept decides one class only
    assert set(PLANTED_CONCEPTS) | set(DISTRACTOR_CONCEPTS) == set(CONCEPTS)
    assert not set(PLANTED_CONCEPTS) & set(DISTRACTOR_CONCEPTS)
    for cls in unions:  # the two concepts of a union are unrelated: different shape and colour
        (c1, s1), (c2, s2) = (concept.split(" ") for concept in cls.concepts)
        assert c1 != c2 and s1 != s2


def test_items_are_pil_images_and_int_labels(world):
    image, label = world[0]
    assert isinstance(image, Image.Image) and image.size == (64, 64) and image.mode == "RGB"
    assert isinstance(label, int) and 0 <= label < len(CLASSES)
    assert len(world) == N


def test_same_seed_same_world_and_any_index_alone():
    a, b = SyntheticWorld(N, seed=3), SyntheticWorld(10 * N, seed=3)
    for i in (0, 7, N - 1):
        assert np.array_equal(a.render(i)[0], b.render(i)[0])
        assert a.annotation(i) == b.annotation(i)
    assert not np.array_equal(SyntheticWorld(N, seed=4).render(0)[0], a.render(0)[0])
    assert np.array_equal(a.render(-1)[0], a.render(N - 1)[0])
    with pytest.raises(IndexError):
        a.render(N)


def test_cache_returns_the_same_images_and_protects_them():
    cached = SyntheticWorld(20, seed=1, cache=True)
    first = cached.render(5)[0]
    first[:] = 0  # a caller scribbling on its copy does not change the world
    assert np.array_equal(cached.render(5)[0], SyntheticWorld(20, seed=1).render(5)[0])


def test_label_is_the_class_of_the_planted_concept(world):
    labels = world.labels()
    for i in range(N):
        annotation = world.annotation(i)
        planted = [o for o in annotation["objects"] if o["planted"]]
        assert len(planted) == 1
        assert planted[0]["concept"] == annotation["planted_concept"] == world.concept_of(i)
        assert annotation["planted_concept"] in CLASSES[annotation["label"]].concepts
        assert labels[i] == annotation["label"] == world[i][1]
        assert all(o["concept"] in DISTRACTOR_CONCEPTS for o in annotation["objects"] if not o["planted"])
    assert set(labels) == set(range(len(CLASSES)))  # 200 images cover all classes
    from synthetic.source import WorldSource

    source = WorldSource(N, seed=world.seed, size_px=world.size_px)  # the dataset kind labels by concept
    assert [source.dataset_label(i) for i in range(N)] == [world.concept_of(i) for i in range(N)]


def test_boxes_lie_inside_the_image_and_do_not_overlap(world):
    for i in range(N):
        boxes = [o["box"] for o in world.annotation(i)["objects"]]
        for top, left, bottom, right in boxes:
            assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64
            assert 14 * 0.5 <= bottom - top <= 22 and 14 * 0.5 <= right - left <= 22
        for j, a in enumerate(boxes):
            for b in boxes[j + 1:]:
                assert box_overlap_fraction(a, b) == 0.0


def test_objects_are_drawn_where_annotated_in_their_colour(world):
    for i in range(0, N, 5):
        image, annotation = world.render(i)
        masks = world.masks(i)
        for obj, mask in zip(annotation["objects"], masks, strict=True):
            top, left, bottom, right = obj["box"]
            rows, cols = np.nonzero(mask)
            assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (top, left, bottom, right)
            pixels = image[mask].astype(int)
            assert np.abs(pixels - np.array(obj["rgb"])).max() <= 1  # opaque, exactly its colour
            assert np.abs(np.array(obj["rgb"]) - np.array(COLOURS[obj["colour"]])).max() <= 12


def test_backgrounds_cover_every_texture():
    world = SyntheticWorld(300, seed=0)
    textures = {world.annotation(i)["background"]["texture"] for i in range(300)}
    assert textures == set(SyntheticWorld.textures)


def test_a_thousand_images_draw_in_one_call():
    world = SyntheticWorld(1000, seed=5)
    arrays = world.arrays()
    assert arrays.shape == (1000, 64, 64, 3) and arrays.dtype == np.uint8
    counts = np.bincount(world.labels(), minlength=len(CLASSES))
    assert counts.min() > 1000 / len(CLASSES) / 2  # roughly balanced classes


def test_other_sizes_scale_the_objects():
    world = SyntheticWorld(5, seed=0, size_px=128)
    image, annotation = world.render(0)
    assert image.shape == (128, 128, 3)
    top, left, bottom, right = annotation["objects"][0]["box"]
    assert bottom - top >= 14


def test_transform_feeds_a_dataloader():
    def to_tensor(image):
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255

    loader = torch.utils.data.DataLoader(SyntheticWorld(10, transform=to_tensor), batch_size=5)
    x, y = next(iter(loader))
    assert x.shape == (5, 3, 64, 64) and y.shape == (5,)


def test_oracle_embedding_sees_the_concepts_inside_a_crop(world):
    annotation = world.annotation(0)
    planted = annotation["objects"][0]
    vector = oracle_embedding(annotation, planted["box"])
    assert vector.shape == (len(CONCEPTS),)
    assert vector[CONCEPTS.index(planted["concept"])] == 1.0
    full = oracle_embedding(annotation, (0, 0, 64, 64))
    assert {CONCEPTS[k] for k in np.flatnonzero(full)} == {o["concept"] for o in annotation["objects"]}
    assert not oracle_embedding(annotation, (0, 0, 0, 0)).any()


def test_polysemantic_kind_reads_the_reference_concepts():
    assert polysemantic_kind(["a"] * 6 + ["b"] * 4) == "polysemantic"
    assert polysemantic_kind(["a"] * 9 + ["b"]) == "monosemantic"
    assert polysemantic_kind(["a"] * 7 + ["b"] + ["c"] * 2) == "polysemantic"
    assert polysemantic_kind(["a"] * 7 + ["b", "c", "d"]) == "mixed"
