"""The synthetic world: small RGB images with planted polysemantic classes and full ground truth.

Every image shows exactly one *planted* object (a shape x colour concept that decides the label) and 0-2
*distractor* objects (shape x colour combinations that belong to no class and share neither colour nor
shape with the concepts of the image's class), all of similar size (14-22 px at 64 px), on a textured
background (plain, horizontal/vertical stripes, checker, dots, noise). Five classes are the union of two
unrelated object concepts ("red circle" OR "cyan square"), so a network with one channel per class grows
channels that are polysemantic by construction; three classes hold a single concept (monosemantic
controls). Each image is drawn from its own random stream seeded by ``(seed, index)``, so any index is
reproducible on its own and the world needs no storage (~1 ms per image).

Boxes are ``(top, left, bottom, right)`` in pixels with bottom/right exclusive, like `pure_core.crops`.
`synthetic.ground_truth` scores PURE and the activation baseline against the planted concepts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 210, 215),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
}
TEXTURES: tuple[str, ...] = ("plain", "stripes_h", "stripes_v", "checker", "dots", "noise")


@dataclass(frozen=True)
class WorldClass:
    """One label of the world: the union of its planted object concepts ("<colour> <shape>")."""

    name: str
    concepts: tuple[str, ...]

    @property
    def polysemantic(self) -> bool:
        return len(self.concepts) > 1


# Five classes are unions of two unrelated concepts, three are controls. The two concepts of a union
# differ in shape and have complementary colours (no RGB channel in common), so their circuits can part.
CLASSES: tuple[WorldClass, ...] = (
    WorldClass("red circle | cyan square", ("red circle", "cyan square")),
    WorldClass("green triangle | magenta cross", ("green triangle", "magenta cross")),
    WorldClass("blue diamond | yellow ring", ("blue diamond", "yellow ring")),
    WorldClass("orange square | blue triangle", ("orange square", "blue triangle")),
    WorldClass("magenta circle | green diamond", ("magenta circle", "green diamond")),
    WorldClass("white cross", ("white cross",)),
    WorldClass("yellow square", ("yellow square",)),
    WorldClass("red ring", ("red ring",)),
)

CONCEPTS: tuple[str, ...] = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)
PLANTED_CONCEPTS: tuple[str, ...] = tuple(c for cls in CLASSES for c in cls.concepts)
DISTRACTOR_CONCEPTS: tuple[str, ...] = tuple(c for c in CONCEPTS if c not in PLANTED_CONCEPTS)


def _distractors_for(cls: WorldClass) -> tuple[str, ...]:
    """Distractors unrelated to `cls`: neither the colour nor the shape of any of its concepts.

    (A "red diamond" beside a "cyan square" of the class "red circle | cyan square" would show half of the
    other planted concept and blur which concept the image shows.)
    """
    colours = {c.split(" ")[0] for c in cls.concepts}
    shapes = {c.split(" ")[1] for c in cls.concepts}
    return tuple(c for c in DISTRACTOR_CONCEPTS
                 if c.split(" ")[0] not in colours and c.split(" ")[1] not in shapes)


DISTRACTORS_BY_CLASS: tuple[tuple[str, ...], ...] = tuple(_distractors_for(cls) for cls in CLASSES)

# Object size (diameter of the shape's bounding square) as a fraction of the image side: 14-22 px at 64 px.
_DIAMETER_FRACTION = (14 / 64, 22 / 64)
_DISTRACTOR_COUNT_P = (0.2, 0.4, 0.4)  # P(0, 1, 2 distractors)
_COLOUR_JITTER = 12  # +- per RGB channel, per object
_MAX_PLACEMENT_TRIES = 50


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of `shape` on offsets `dy`, `dx` (pixel centres minus the object's centre)."""
    r = radius
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        half = 0.82 * r  # area close to the circle's
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "triangle":  # apex up, base at the bottom
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "cross":
        arm = r / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation background colour (never mistaken for an object colour)."""
    grey = rng.uniform(50, 190)
    tint = rng.uniform(-25, 25, size=3)
    return np.clip(grey + tint, 0, 255)


@functools.lru_cache(maxsize=8)
def _grid(size_px: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _draw_background(rng: np.random.Generator, size_px: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W, 3) float background and its annotation."""
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    if np.abs(c0 - c1).max() < 30:  # keep the two texture colours apart so the texture is visible
        c1 = np.clip(c0 + np.where(c0.mean() > 120, -45, 45), 0, 255)
    period_px = int(rng.integers(max(3, size_px // 16), max(4, size_px // 6) + 1))
    yy, xx = _grid(size_px)
    if texture == "plain":
        pattern = np.zeros((size_px, size_px), dtype=bool)
    elif texture == "stripes_h":
        pattern = (yy // period_px) % 2 == 1
    elif texture == "stripes_v":
        pattern = (xx // period_px) % 2 == 1
    elif texture == "checker":
        pattern = ((yy // period_px) + (xx // period_px)) % 2 == 1
    elif texture == "dots":
        cy = (yy % (2 * period_px)) - period_px + 0.5
        cx = (xx % (2 * period_px)) - period_px + 0.5
        pattern = cy**2 + cx**2 <= (0.45 * period_px) ** 2
    else:  # noise
        pattern = rng.random((size_px, size_px)) < 0.5
    image = np.where(pattern[..., None], c1.astype(np.float32), c0.astype(np.float32))
    image += 4 * rng.standard_normal(image.shape, dtype=np.float32)  # mild sensor noise everywhere
    background = {
        "texture": texture,
        "colours": [tuple(int(v) for v in c0), tuple(int(v) for v in c1)],
        "period_px": period_px,
    }
    return image, background


def _place(rng: np.random.Generator, size_px: int, diameter: int, taken: list[tuple[int, int, int, int]]):
    """A free (top, left) for a `diameter` square, 1 px away from every taken box; None if none found."""
    for _ in range(_MAX_PLACEMENT_TRIES):
        top = int(rng.integers(0, size_px - diameter + 1))
        left = int(rng.integers(0, size_px - diameter + 1))
        bottom, right = top + diameter, left + diameter
        if all(
            bottom + 1 <= t or b + 1 <= top or right + 1 <= lft or r + 1 <= left
            for t, lft, b, r in taken
        ):
            return top, left
    return None


class SyntheticWorld(Dataset):
    """Seeded, annotated images of the synthetic world; a torch `Dataset` of ``(PIL.Image, label)``.

    `n_images` images, index ``i`` drawn from the stream ``default_rng([seed, i])`` (so independent of
    `n_images` and of any other index). `transform` is applied to the PIL image in `__getitem__` (e.g.
    ``DEMO_PREPROCESSING.to_tensor``). `cache=True` keeps rendered images and annotations in memory.
    """

    classes: tuple[WorldClass, ...] = CLASSES
    class_names: tuple[str, ...] = tuple(c.name for c in CLASSES)
    concept_names: tuple[str, ...] = CONCEPTS
    planted_concepts: tuple[str, ...] = PLANTED_CONCEPTS
    distractor_concepts: tuple[str, ...] = DISTRACTOR_CONCEPTS
    shapes: tuple[str, ...] = SHAPES
    colours: dict[str, tuple[int, int, int]] = COLOURS
    textures: tuple[str, ...] = TEXTURES

    def __init__(self, n_images: int, seed: int = 0, size_px: int = 64, transform=None, cache: bool = False):
        if n_images < 0:
            raise ValueError("n_images must be >= 0")
        if size_px < 24:
            raise ValueError("size_px must be >= 24 (objects need room)")
        self.n_images = int(n_images)
        self.seed = int(seed)
        self.size_px = int(size_px)
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}

    # -- dataset protocol ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, i: int):
        array, annotation = self.render(i)
        image = Image.fromarray(array)
        if self.transform is not None:
            image = self.transform(image)
        return image, annotation["label"]

    @property
    def params(self) -> dict[str, Any]:
        """What identifies this world (for checkpoints and run configs)."""
        return {"n_images": self.n_images, "seed": self.seed, "size_px": self.size_px}

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    # -- drawing ------------------------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n_images
        if not 0 <= i < self.n_images:
            raise IndexError(f"index {i} out of range for a world of {self.n_images} images")
        return i

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i])

    def render(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Image ``i`` as ``(H, W, 3) uint8`` and its annotation (see `annotation`)."""
        i = self._check_index(i)
        if i in self._cache:
            array, annotation = self._cache[i]
            return array.copy(), _copy_annotation(annotation)
        array, annotation = self._draw(i)
        if self.cache:
            self._cache[i] = (array.copy(), _copy_annotation(annotation))
        return array, annotation

    def _draw(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        rng = self._rng(i)
        size = self.size_px
        label = int(rng.integers(self.n_classes))  # first draw: `labels()` reads only this
        cls = self.classes[label]
        planted = cls.concepts[int(rng.integers(len(cls.concepts)))]
        n_distractors = int(rng.choice(len(_DISTRACTOR_COUNT_P), p=_DISTRACTOR_COUNT_P))
        pool = DISTRACTORS_BY_CLASS[label]
        concepts = [planted] + [pool[int(k)] for k in rng.integers(len(pool), size=n_distractors)]
        image, background = _draw_background(rng, size)
        lo, hi = (max(6, round(f * size)) for f in _DIAMETER_FRACTION)
        objects: list[dict[str, Any]] = []
        taken: list[tuple[int, int, int, int]] = []
        for j, concept in enumerate(concepts):
            diameter = int(rng.integers(lo, hi + 1))
            spot = _place(rng, size, diameter, taken)
            if spot is None:  # only distractors can miss (the planted object is placed first)
                continue
            top, left = spot
            colour_name, shape = concept.split(" ")
            jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
            colour = np.clip(np.array(COLOURS[colour_name]) + jitter, 0, 255)
            mask = self._object_mask(shape, top, left, diameter)
            image[top:top + diameter, left:left + diameter][mask] = colour
            taken.append((top, left, top + diameter, left + diameter))
            objects.append({
                "concept": concept,
                "concept_id": CONCEPTS.index(concept),
                "shape": shape,
                "colour": colour_name,
                "rgb": tuple(int(v) for v in colour),
                "planted": j == 0,
                "box": self._tight_box(mask, top, left),
                "diameter_px": diameter,
            })
        array = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        annotation = {
            "index": i,
            "label": label,
            "class_name": cls.name,
            "planted_concept": planted,
            "objects": objects,
            "background": background,
        }
        return array, annotation

    @staticmethod
    def _object_mask(shape: str, top: int, left: int, diameter: int) -> np.ndarray:
        """(diameter, diameter) mask of a shape whose bounding square starts at (top, left)."""
        offsets = np.arange(diameter) + 0.5 - diameter / 2
        dy, dx = offsets[:, None], offsets[None, :]
        return _shape_mask(shape, dy, dx, diameter / 2)

    @staticmethod
    def _tight_box(mask: np.ndarray, top: int, left: int) -> tuple[int, int, int, int]:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        return (top + int(rows[0]), left + int(cols[0]), top + int(rows[-1]) + 1, left + int(cols[-1]) + 1)

    # -- ground truth -------------------------------------------------------------------------------
    def annotation(self, i: int) -> dict[str, Any]:
        """Ground truth of image ``i``: ``{index, label, class_name, planted_concept, objects, background}``.

        ``objects`` (planted first): ``{concept, concept_id, shape, colour, rgb, planted, box, diameter_px}``
        with ``box = (top, left, bottom, right)`` the tight box of the drawn pixels.
        ``background``: ``{texture, colours, period_px}``.
        """
        return self.render(i)[1]

    def concept_of(self, i: int) -> str:
        """The planted concept of image ``i`` (e.g. ``"red circle"``)."""
        return self.render(i)[1]["planted_concept"]

    def masks(self, i: int) -> np.ndarray:
        """(n_objects, H, W) bool: the drawn pixels of each annotated object, in `annotation` order."""
        annotation = self.annotation(i)
        out = np.zeros((len(annotation["objects"]), self.size_px, self.size_px), dtype=bool)
        for k, obj in enumerate(annotation["objects"]):
            top, left, bottom, right = obj["box"]
            d = obj["diameter_px"]
            # recover the bounding square from the tight box (shapes are centred in it)
            mask = self._object_mask(obj["shape"], 0, 0, d)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            sq_top, sq_left = top - int(rows[0]), left - int(cols[0])
            out[k, sq_top:sq_top + d, sq_left:sq_left + d] = mask
        return out

    def labels(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(n,) int64 labels without drawing the images."""
        indices = range(self.n_images) if indices is None else indices
        return np.array([int(self._rng(self._check_index(i)).integers(self.n_classes)) for i in indices],
                        dtype=np.int64)

    def arrays(self, indices: Sequence[int] | None = None, progress: bool = False) -> np.ndarray:
        """(n, H, W, 3) uint8 images (all of them when `indices` is None)."""
        indices = range(self.n_images) if indices is None else indices
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="drawing world", unit="img")
        out = [self.render(i)[0] for i in indices]
        if not out:
            return np.zeros((0, self.size_px, self.size_px, 3), dtype=np.uint8)
        return np.stack(out)


def _copy_annotation(annotation: dict[str, Any]) -> dict[str, Any]:
    return {**annotation, "objects": [dict(o) for o in annotation["objects"]],
            "background": dict(annotation["background"])}


def box_overlap_fraction(box: Sequence[int], crop: Sequence[int]) -> float:
    """Fraction of `box`'s area inside `crop` (both ``(top, left, bottom, right)``)."""
    top, left = max(box[0], crop[0]), max(box[1], crop[1])
    bottom, right = min(box[2], crop[2]), min(box[3], crop[3])
    area = (box[2] - box[0]) * (box[3] - box[1])
    if area <= 0 or bottom <= top or right <= left:
        return 0.0
    return (bottom - top) * (right - left) / area


def oracle_embedding(annotation: dict[str, Any], box: Sequence[int]) -> np.ndarray:
    """(len(CONCEPTS),) float32: per object concept, the largest fraction of its box inside crop `box`.

    An ideal embedder for this world: crops showing the same concepts coincide, crops showing different
    concepts sit ``sqrt(2)`` apart. ``box = (top, left, bottom, right)`` in image pixels.
    """
    out = np.zeros(len(CONCEPTS), dtype=np.float32)
    for obj in annotation["objects"]:
        k = obj["concept_id"]
        out[k] = max(out[k], box_overlap_fraction(obj["box"], box))
    return out


def polysemantic_kind(concepts: Sequence[str], min_share: float = 0.2, mono_share: float = 0.8) -> str:
    """Classify a neuron by the planted concepts of its references.

    ``"polysemantic"``: at least two concepts each make up >= `min_share` of the references;
    ``"monosemantic"``: one concept makes up >= `mono_share`; else ``"mixed"``.
    """
    if len(concepts) == 0:
        return "mixed"
    _, counts = np.unique(np.asarray(concepts), return_counts=True)
    shares = counts / counts.sum()
    if (shares >= min_share).sum() >= 2:
        return "polysemantic"
    if shares.max() >= mono_share:
        return "monosemantic"
    return "mixed"


def world_mean_std(n_images: int = 2000, seed: int = 12345, size_px: int = 64) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the world's pixels in [0, 1] (how `DEMO_PREPROCESSING` was set)."""
    x = SyntheticWorld(n_images, seed=seed, size_px=size_px).arrays().reshape(-1, 3) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def contact_sheet(world: SyntheticWorld, indices: Sequence[int], scale: int = 2) -> Image.Image:
    """A grid of images ``indices`` (for looking at the world), `scale` x enlarged."""
    cols = max(1, math.ceil(math.sqrt(len(indices))))
    rows = max(1, math.ceil(len(indices) / cols))
    s = world.size_px
    sheet = np.full((rows * (s + 2), cols * (s + 2), 3), 255, dtype=np.uint8)
    for n, i in enumerate(indices):
        r, c = divmod(n, cols)
        sheet[r * (s + 2):r * (s + 2) + s, c * (s + 2):c * (s + 2) + s] = world.render(i)[0]
    img = Image.fromarray(sheet)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def world_batches(world: SyntheticWorld, preprocessing, batch_size: int = 256,
                  indices: Sequence[int] | None = None):
    """Consecutive model-input batches ``(B, 3, size, size)`` of `world` (all images, or `indices` in order).

    `preprocessing` is a `pure_core.models.Preprocessing`; when it keeps the world's resolution the
    normalisation is applied to whole arrays at once (fast path), else image by image.
    """
    import torch

    indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
    same_size = preprocessing.size == preprocessing.resize == world.size_px
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        if same_size:
            x = torch.from_numpy(world.arrays(chunk)).permute(0, 3, 1, 2).float() / 255.0
            yield preprocessing.normalize(x)
        else:
            yield preprocessing.to_batch([Image.fromarray(world.render(i)[0]) for i in chunk])
