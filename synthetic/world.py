"""The synthetic world: small RGB images with planted polysemantic classes and full ground truth.

A *concept* is a shape with a fill pattern ("hstripes circle", "checker tbar"); colour carries no concept
information. Every image shows one *planted* object (the concept that decides the label) and 1-4
*distractor* objects packed 1-4 px around it (inside the receptive field of any unit that sees the planted
object), on a background drawn from one distribution shared by all classes. Each object's colour is drawn
from `PALETTE` independently of its concept; its fill alternates that colour with a dark shade of it, and
every fill covers about half of the object, so colour and brightness statistics say nothing about the
concept.

Eight classes are *unions* of two concepts that share their fill and differ in shape (an elongated bar vs
a compact blob: "hstripes tbar | hstripes circle"), so a small window on the object (a patch of the fill)
is the same for both concepts; only the shape, read in deeper layers, tells them apart. In 70 % of a
union's images one distractor shows the union's *other* shape in another fill (drawn from the same fills
whichever concept is planted), so which shapes are present does not tell which concept was planted
either. Eight classes hold one concept (monosemantic controls).
Distractors are the unplanted concepts; shapes and fills are reused across classes, so the label needs the
conjunction of shape and fill. A network with one channel per class therefore grows channels that are
polysemantic by construction (`synthetic.demo`).

Each image is drawn from its own random stream seeded by ``(seed, index)``, so any index is reproducible on
its own and the world needs no storage (under 1 ms per image). Boxes are ``(top, left, bottom, right)`` in
pixels with bottom/right exclusive, like `pure_core.crops`. `synthetic.ground_truth` scores PURE, the
activation baseline and trivial readings against the planted concepts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

FILLS: tuple[str, ...] = ("hstripes", "vstripes", "checker", "dstripes", "astripes", "dots")
SHAPES: tuple[str, ...] = ("circle", "diamond", "hexagon", "tbar", "tvbar", "square", "triangle", "cross",
                           "hourglass")
# Object colours (vivid, any hue), drawn independently of the concept.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 210, 215),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
    "violet": (150, 90, 230),
    "lime": (120, 200, 40),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "blobs", "grid")
# Bump when what an index draws changes: run stores and checkpoints record it, so a store of an older world
# is never resumed or compared as if it were this one.
WORLD_VERSION = 2


@dataclass(frozen=True)
class WorldClass:
    """One label of the world: the union of its planted concepts ("<fill> <shape>")."""

    name: str
    concepts: tuple[str, ...]

    @property
    def polysemantic(self) -> bool:
        return len(self.concepts) > 1


def _union(fill: str, bar: str, blob: str) -> WorldClass:
    a, b = f"{fill} {bar}", f"{fill} {blob}"
    return WorldClass(f"{a} | {b}", (a, b))


def _control(concept: str) -> WorldClass:
    return WorldClass(concept, (concept,))


# Unions pair a bar with a blob of the same fill; controls use the other fills and shapes, and every bar or
# blob shape keeps at least two unplanted fills for the "other shape" distractor.
CLASSES: tuple[WorldClass, ...] = (
    _union("hstripes", "tbar", "circle"),
    _union("hstripes", "tvbar", "diamond"),
    _union("vstripes", "tbar", "diamond"),
    _union("vstripes", "tvbar", "hexagon"),
    _union("checker", "tbar", "hexagon"),
    _union("checker", "tvbar", "circle"),
    _union("dstripes", "tbar", "circle"),
    _union("dstripes", "tvbar", "diamond"),
    _control("astripes square"),
    _control("dots diamond"),
    _control("astripes hexagon"),
    _control("dots cross"),
    _control("hstripes square"),
    _control("vstripes triangle"),
    _control("checker cross"),
    _control("dstripes hourglass"),
)

CONCEPTS: tuple[str, ...] = tuple(f"{fill} {shape}" for shape in SHAPES for fill in FILLS)
PLANTED_CONCEPTS: tuple[str, ...] = tuple(c for cls in CLASSES for c in cls.concepts)
DISTRACTOR_CONCEPTS: tuple[str, ...] = tuple(c for c in CONCEPTS if c not in PLANTED_CONCEPTS)


def other_shape_distractors(cls: WorldClass, planted: str) -> tuple[str, ...]:
    """The "other shape" distractors of a union image: its other concept's shape in every fill in which
    neither of the union's shapes is planted (empty for controls).

    The fills are the same whichever concept is planted, so the distractor's fill tells nothing either.
    """
    shapes = [c.split(" ")[1] for c in cls.concepts]
    fills = [f for f in FILLS if all(f"{f} {s}" in DISTRACTOR_CONCEPTS for s in shapes)]
    others = [s for c, s in zip(cls.concepts, shapes, strict=True) if c != planted]
    return tuple(f"{f} {s}" for s in others for f in fills)


# Sizes at 64 px, scaled with the image side: objects 20-26 px across, 1-4 px apart, fill period 6 px.
_DIAMETER_FRACTION = (20 / 64, 26 / 64)
_GAP_FRACTION = (1 / 64, 4 / 64)
_FILL_PERIOD_FRACTION = 6 / 64
_N_DISTRACTORS_P = (0.0, 0.3, 0.4, 0.3)  # P(0, 1, 2, 3 distractors), plus the "other shape" one
_OTHER_SHAPE_P = 0.7  # a union's image also shows its other shape (in another fill)
_DARK = 0.3  # off-pattern pixels of an object: its colour * _DARK
_COLOUR_JITTER = 15  # +- per RGB channel, per object
_PLACEMENT_TRIES = 40


@functools.lru_cache(maxsize=256)
def shape_mask(shape: str, diameter: int) -> np.ndarray:
    """(d, d) read-only bool mask of `shape` centred in a ``diameter`` square."""
    offsets = np.arange(diameter) + 0.5 - diameter / 2
    dy, dx = offsets[:, None], offsets[None, :]
    r = diameter / 2
    if shape == "circle":
        mask = dy**2 + dx**2 <= r**2
    elif shape == "square":
        mask = (np.abs(dy) <= 0.82 * r) & (np.abs(dx) <= 0.82 * r)
    elif shape == "triangle":  # apex up
        mask = (np.abs(dx) <= (dy + r) / 2) & (dy <= r)
    elif shape == "cross":
        arm = 0.4 * r
        mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= r
    elif shape == "hourglass":  # two triangles meeting at their tips
        mask = (np.abs(dy) <= 0.9 * r) & (np.abs(dx) <= 0.15 * r + 0.85 * np.abs(dy))
    elif shape == "tbar":  # thick horizontal bar
        mask = (np.abs(dy) <= 0.42 * r) & (np.abs(dx) <= r)
    elif shape == "tvbar":  # thick vertical bar
        mask = (np.abs(dx) <= 0.42 * r) & (np.abs(dy) <= r)
    elif shape == "hexagon":  # flat top and bottom
        mask = (np.abs(dy) <= 0.866 * r) & (np.abs(dx) + 0.577 * np.abs(dy) <= r)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    mask.setflags(write=False)
    return mask


def fill_pattern(fill: str, diameter: int, phase: tuple[int, int], period: int) -> np.ndarray:
    """(d, d) bool: where the fill shows the object's colour (about half the pixels; the rest is dark)."""
    yy, xx = np.mgrid[0:diameter, 0:diameter]
    yy, xx = yy + phase[0], xx + phase[1]
    half = period // 2
    if fill == "hstripes":
        return (yy % period) < half
    if fill == "vstripes":
        return (xx % period) < half
    if fill == "checker":
        return ((yy // half) + (xx // half)) % 2 == 0
    if fill == "dstripes":
        return ((yy + xx) % period) < half
    if fill == "astripes":
        return ((yy - xx) % period) < half
    if fill == "dots":  # discs on a square lattice covering ~50 %
        cy, cx = (yy % period) - period / 2 + 0.5, (xx % period) - period / 2 + 0.5
        return cy**2 + cx**2 <= (0.4 * period) ** 2
    raise ValueError(f"unknown fill {fill!r}; known: {FILLS}")


def _draw_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """A muted (H, W, 3) float background whose kind and tint are independent of the class."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    base = rng.uniform(60, 170) + rng.uniform(-20, 20, size=3)
    image = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    if kind == "noise":
        image += rng.normal(0, 18, size=(size, size, 1)).astype(np.float32)
    elif kind == "blobs":  # smooth low-frequency shading on a 4 x 4 grid of tiles
        coarse = rng.normal(0, 25, size=(4, 4, 3)).astype(np.float32)
        tile = -(-size // 4)
        image += np.kron(coarse, np.ones((tile, tile, 1), dtype=np.float32))[:size, :size]
    elif kind == "grid":  # thin lines at a period no fill uses
        period = int(rng.integers(9, 14))
        yy, xx = np.mgrid[0:size, 0:size]
        image[(yy % period == 0) | (xx % period == 0)] += rng.choice([-35.0, 35.0])
    image += rng.normal(0, 4, size=image.shape).astype(np.float32)  # mild sensor noise everywhere
    return image, {"kind": kind, "tint": tuple(int(v) for v in np.clip(base, 0, 255))}


def _overlaps(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    top, left, bottom, right = box
    return any(not (bottom + 1 <= t or b + 1 <= top or right + 1 <= lft or r + 1 <= left)
               for t, lft, b, r in taken)


def _place_near(rng: np.random.Generator, size: int, diameter: int, anchor: tuple[int, int, int, int],
                taken: list[tuple[int, int, int, int]], gap: tuple[int, int]) -> tuple[int, int] | None:
    """(top, left) of a free `diameter` square `gap` px beside the `anchor` box, inside the image."""
    t0, l0, b0, r0 = anchor
    for _ in range(_PLACEMENT_TRIES):
        side = int(rng.integers(4))
        g = int(rng.integers(gap[0], gap[1] + 1))
        along_rows = int(rng.integers(t0 - diameter // 2, b0 - diameter // 2 + 1))
        along_cols = int(rng.integers(l0 - diameter // 2, r0 - diameter // 2 + 1))
        top, left = ((t0 - g - diameter, along_cols), (b0 + g, along_cols),
                     (along_rows, l0 - g - diameter), (along_rows, r0 + g))[side]
        box = (top, left, top + diameter, left + diameter)
        if top >= 0 and left >= 0 and box[2] <= size and box[3] <= size and not _overlaps(box, taken):
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
    fills: tuple[str, ...] = FILLS
    palette: dict[str, tuple[int, int, int]] = PALETTE
    backgrounds: tuple[str, ...] = BACKGROUNDS

    def __init__(self, n_images: int, seed: int = 0, size_px: int = 64, transform=None, cache: bool = False):
        if n_images < 0:
            raise ValueError("n_images must be >= 0")
        if size_px < 48:
            raise ValueError("size_px must be >= 48 (objects and their neighbours need room)")
        self.n_images = int(n_images)
        self.seed = int(seed)
        self.size_px = int(size_px)
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        scale = self.size_px
        self._diameter = tuple(round(f * scale) for f in _DIAMETER_FRACTION)
        self._gap = tuple(max(1, round(f * scale)) for f in _GAP_FRACTION)
        self._period = max(4, 2 * round(_FILL_PERIOD_FRACTION * scale / 2))

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
        return {"n_images": self.n_images, "seed": self.seed, "size_px": self.size_px,
                "version": WORLD_VERSION}

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

    def _label_and_planted(self, rng: np.random.Generator) -> tuple[int, str]:
        """An image's first two draws: its label and its planted concept (`labels` reads the first only,
        `concept_of` both, neither draws the image)."""
        label = int(rng.integers(self.n_classes))
        concepts = self.classes[label].concepts
        return label, concepts[int(rng.integers(len(concepts)))]

    def _concepts(self, rng: np.random.Generator, cls: WorldClass, planted: str) -> list[str]:
        """The planted concept first, then the distractors of one image."""
        n_distractors = int(rng.choice(len(_N_DISTRACTORS_P), p=_N_DISTRACTORS_P))
        pool = DISTRACTOR_CONCEPTS
        concepts = [planted] + [pool[int(k)] for k in rng.integers(len(pool), size=n_distractors)]
        other = other_shape_distractors(cls, planted)
        if other and rng.random() < _OTHER_SHAPE_P:
            concepts.insert(1, other[int(rng.integers(len(other)))])
        return concepts

    def _draw(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        rng = self._rng(i)
        size = self.size_px
        label, planted = self._label_and_planted(rng)
        cls = self.classes[label]
        concepts = self._concepts(rng, cls, planted)
        image, background = _draw_background(rng, size)
        colour_names = tuple(PALETTE)
        objects: list[dict[str, Any]] = []
        taken: list[tuple[int, int, int, int]] = []
        for j, concept in enumerate(concepts):
            d = int(rng.integers(self._diameter[0], self._diameter[1] + 1))
            if j == 0:  # the planted object: anywhere, 2 px from the border, so neighbours fit around it
                top, left = (int(v) for v in rng.integers(2, size - d - 2 + 1, size=2))
            else:
                spot = _place_near(rng, size, d, taken[0], taken, self._gap)
                if spot is None:  # only distractors can miss
                    continue
                top, left = spot
            fill, shape = concept.split(" ")
            colour_name = colour_names[int(rng.integers(len(colour_names)))]
            jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
            colour = np.clip(np.array(PALETTE[colour_name]) + jitter, 0, 255)
            phase = (int(rng.integers(self._period)), int(rng.integers(self._period)))
            mask = shape_mask(shape, d)
            on = fill_pattern(fill, d, phase, self._period)
            patch = np.where(on[..., None], colour, colour * _DARK)
            image[top:top + d, left:left + d][mask] = patch[mask]
            taken.append((top, left, top + d, left + d))
            objects.append({
                "concept": concept,
                "concept_id": CONCEPTS.index(concept),
                "shape": shape,
                "fill": fill,
                "colour": colour_name,
                "rgb": tuple(int(v) for v in colour),
                "planted": j == 0,
                "box": _tight_box(mask, top, left),
                "square": (top, left, top + d, left + d),
                "fill_phase": phase,
            })
        array = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        annotation = {
            "index": i,
            "label": label,
            "class_name": cls.name,
            "planted_concept": concepts[0],
            "objects": objects,
            "background": background,
        }
        return array, annotation

    # -- ground truth -------------------------------------------------------------------------------
    def annotation(self, i: int) -> dict[str, Any]:
        """Ground truth of image ``i``: ``{index, label, class_name, planted_concept, objects, background}``.

        ``objects`` (planted first): ``{concept, concept_id, shape, fill, colour, rgb, planted, box, square,
        fill_phase}`` with ``box = (top, left, bottom, right)`` the tight box of the drawn pixels and
        ``square`` the object's bounding square. ``background``: ``{kind, tint}``.
        """
        return self.render(i)[1]

    def concept_of(self, i: int) -> str:
        """The planted concept of image ``i`` (e.g. ``"hstripes circle"``), without drawing the image."""
        return self._label_and_planted(self._rng(self._check_index(i)))[1]

    def masks(self, i: int) -> np.ndarray:
        """(n_objects, H, W) bool: the drawn pixels of each annotated object, in `annotation` order."""
        annotation = self.annotation(i)
        out = np.zeros((len(annotation["objects"]), self.size_px, self.size_px), dtype=bool)
        for k, obj in enumerate(annotation["objects"]):
            top, left, bottom, right = obj["square"]
            out[k, top:bottom, left:right] = shape_mask(obj["shape"], bottom - top)
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


def _tight_box(mask: np.ndarray, top: int, left: int) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (top + int(rows[0]), left + int(cols[0]), top + int(rows[-1]) + 1, left + int(cols[-1]) + 1)


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


def model_inputs(arrays: np.ndarray, preprocessing) -> torch.Tensor:
    """``(n, 3, size, size)`` model inputs of world images ``arrays (n, H, W, 3)`` uint8: normalised as whole
    arrays when `preprocessing` (a `pure_core.models.Preprocessing`) keeps their size, else image by image."""
    if preprocessing.size == preprocessing.resize == arrays.shape[1]:
        return preprocessing.from_pixels(arrays)
    return preprocessing.to_batch([Image.fromarray(array) for array in arrays])


def world_batches(world: SyntheticWorld, preprocessing, batch_size: int = 256,
                  indices: Sequence[int] | None = None):
    """Consecutive model-input batches ``(B, 3, size, size)`` of `world` (all images, or `indices` in order;
    `model_inputs`)."""
    indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
    for start in range(0, len(indices), batch_size):
        yield model_inputs(world.arrays(indices[start:start + batch_size]), preprocessing)
