"""The synthetic world: deterministic, annotated, labelled by the planted concept, fast to draw."""

import numpy as np
import pytest
import torch
from PIL import Image

from synthetic.world import (
    CLASSES,
    CONCEPTS,
    DISTRACTOR_CONCEPTS,
    PALETTE,
    PLANTED_CONCEPTS,
    SyntheticWorld,
    box_overlap_fraction,
    oracle_embedding,
    other_shape_distractors,
    polysemantic_kind,
)

N = 200


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(N, seed=0, cache=True)


def test_the_class_table_plants_eight_unions_and_eight_controls():
    unions = [c for c in CLASSES if c.polysemantic]
    controls = [c for c in CLASSES if not c.polysemantic]
    assert len(unions) == 8 and len(controls) == 8
    assert all(len(c.concepts) == 2 for c in unions)
    assert len(set(PLANTED_CONCEPTS)) == len(PLANTED_CONCEPTS)  # a concept decides one class only
    assert set(PLANTED_CONCEPTS) | set(DISTRACTOR_CONCEPTS) == set(CONCEPTS)
    assert not set(PLANTED_CONCEPTS) & set(DISTRACTOR_CONCEPTS)
    for cls in unions:  # the two concepts of a union share the fill and differ in shape (a bar and a blob)
        (f1, s1), (f2, s2) = (concept.split(" ") for concept in cls.concepts)
        assert f1 == f2 and s1 != s2 and {s1, s2} & {"tbar", "tvbar"}
    # shapes and fills are reused across classes: neither alone tells the label
    fills = [c.split(" ")[0] for c in PLANTED_CONCEPTS]
    shapes = [c.split(" ")[1] for c in PLANTED_CONCEPTS]
    assert max(fills.count(f) for f in set(fills)) >= 4 and max(shapes.count(s) for s in set(shapes)) >= 4


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
        objects = world.annotation(i)["objects"]
        for obj in objects:
            top, left, bottom, right = obj["square"]
            assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64 and 20 <= bottom - top <= 26
            t, lft, b, r = obj["box"]
            assert top <= t < b <= bottom and left <= lft < r <= right
        squares = [o["square"] for o in objects]
        for j, a in enumerate(squares):
            for b in squares[j + 1:]:
                assert box_overlap_fraction(a, b) == 0.0


def test_distractors_sit_in_the_receptive_field_around_the_planted_object(world):
    gaps = []
    for i in range(N):
        planted, *others = world.annotation(i)["objects"]
        t, lft, b, r = planted["square"]
        for obj in others:
            t2, l2, b2, r2 = obj["square"]
            gaps.append(max(t2 - b, t - b2, l2 - r, lft - r2))  # the gap along the side they face
    assert gaps and 1 <= min(gaps) and max(gaps) <= 4


def test_objects_are_drawn_where_annotated_in_their_colour_and_its_dark_shade(world):
    for i in range(0, N, 5):
        image, annotation = world.render(i)
        masks = world.masks(i)
        for obj, mask in zip(annotation["objects"], masks, strict=True):
            rows, cols = np.nonzero(mask)
            assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == obj["box"]
            pixels = image[mask].astype(int)
            rgb = np.array(obj["rgb"])
            bright = np.abs(pixels - rgb).max(1) <= 1
            dark = np.abs(pixels - 0.3 * rgb).max(1) <= 1
            assert (bright | dark).all()  # opaque: its colour where the fill is on, a dark shade elsewhere
            assert 0.3 <= bright.mean() <= 0.75  # every fill covers about half of the object
            assert np.abs(rgb - np.array(PALETTE[obj["colour"]])).max() <= 15


def test_colour_carries_no_concept_information():
    world = SyntheticWorld(3000, seed=0)
    by_concept: dict[str, list[str]] = {}
    for i in range(3000):
        planted = world.annotation(i)["objects"][0]
        by_concept.setdefault(planted["concept"], []).append(planted["colour"])
    colours = list(PALETTE)
    for concept, seen in by_concept.items():  # every planted concept shows every colour, none dominating
        shares = np.array([seen.count(c) for c in colours]) / len(seen)
        assert shares.min() > 0 and shares.max() < 0.25, concept


def test_the_other_shape_distractor_comes_in_the_same_fills_whichever_concept_is_planted():
    for cls in (c for c in CLASSES if c.polysemantic):
        a, b = cls.concepts
        fills_a = {c.split(" ")[0] for c in other_shape_distractors(cls, a)}
        fills_b = {c.split(" ")[0] for c in other_shape_distractors(cls, b)}
        assert fills_a == fills_b and fills_a
        assert {c.split(" ")[1] for c in other_shape_distractors(cls, a)} == {b.split(" ")[1]}
        assert set(other_shape_distractors(cls, a)) <= set(DISTRACTOR_CONCEPTS)
    assert other_shape_distractors(CLASSES[-1], CLASSES[-1].concepts[0]) == ()


def test_union_images_often_show_the_other_shape_of_their_union():
    world = SyntheticWorld(1000, seed=0)
    hits, unions = 0, 0
    for i in range(1000):
        annotation = world.annotation(i)
        cls = CLASSES[annotation["label"]]
        if not cls.polysemantic:
            continue
        unions += 1
        other = next(c for c in cls.concepts if c != annotation["planted_concept"]).split(" ")[1]
        hits += any(o["shape"] == other for o in annotation["objects"][1:])
    assert 0.6 <= hits / unions <= 0.85  # 70 % by design (some neighbours find no room)


def test_backgrounds_cover_every_kind():
    world = SyntheticWorld(300, seed=0)
    kinds = {world.annotation(i)["background"]["kind"] for i in range(300)}
    assert kinds == set(SyntheticWorld.backgrounds)


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
    top, left, bottom, right = annotation["objects"][0]["square"]
    assert 40 <= bottom - top <= 52


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
