"""Zero-shot labels and text search in CLIP's joint image-text space (open_clip).

`ClipProbe` maps crops and words into one space: ``encode_images`` gives the image tower's projected
features, ``encode_texts`` the text tower's features of each name averaged over prompt templates (CLIP's
prompt ensembling), both unit-length. `zero_shot_labels` names each crop by its most similar vocabulary
entries (softmax of the model's logit scale times the cosine similarity, as in CLIP's zero-shot classifier);
`centroids` averages a group's crop features into one searchable direction per virtual neuron, which a
free-text query's `encode_texts` vector is compared with.

Weights come as for `pure_core.embed.OpenClipEmbedder` (a pretrained tag, a local checkpoint, or ``none``
for seeded random weights in plumbing tests); missing ones raise `pure_core.models.MissingWeightsError` fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from pure_core.embed import (
    OPEN_CLIP_PREFIX,
    OpenClipEmbedder,
    parse_open_clip_spec,
    resolve_open_clip_weights,
)
from pure_core.labels import top_classes
from pure_core.models import MissingWeightsError

__all__ = [
    "CROP_TEMPLATES",
    "ClipProbe",
    "centroids",
    "check_clip_weights",
    "make_clip_probe",
    "parse_clip_spec",
    "zero_shot_labels",
]

# Prompts for crops of a feature visualisation: close views of a thing, a part or a texture.
CROP_TEMPLATES = ("a photo of a {}.", "a close-up photo of a {}.", "a cropped photo of the {}.")
TEXT_BATCH = 256


class ClipProbe:
    """The joint image-text space of open_clip ``model_name`` with ``pretrained`` weights (tag, local path,
    or None for seeded random weights); ``name`` is a spec (`make_clip_probe`) that rebuilds it."""

    def __init__(self, model_name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32, templates: Sequence[str] = CROP_TEMPLATES) -> None:
        import open_clip

        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"every prompt template needs a '{{}}' for the name; got {list(templates)}")
        self.images = OpenClipEmbedder(model_name, pretrained, device=device, batch_size=batch_size,
                                       pooling="image_features")
        self.model = self.images.model
        self.device = self.images.device
        try:
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except OSError as error:  # a Hugging Face tokenizer that is neither cached nor downloadable
            raise MissingWeightsError(f"the tokenizer of open_clip {model_name} is not on this machine "
                                      f"({error})") from error
        self.templates = tuple(templates)
        self.dim = self.images.dim
        self.name = self.images.name.rsplit("#", 1)[0]
        scale = getattr(self.model, "logit_scale", None)
        self.logit_scale = 100.0 if scale is None else float(scale.detach().exp())

    def encode_images(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """``(n, dim)`` float32 unit-length image features (``encode_image``), in order."""
        return _unit(self.images.embed(images))

    def encode_texts(self, names: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` float32: per name, the mean of its prompts' unit-length text features (one prompt
        per template), made unit-length again."""
        names = [str(n) for n in names]
        if not names:
            return np.zeros((0, self.dim), dtype=np.float32)
        prompts = [template.format(name) for name in names for template in self.templates]
        parts = []
        with torch.inference_mode():
            for start in range(0, len(prompts), TEXT_BATCH):
                tokens = self.tokenizer(prompts[start:start + TEXT_BATCH]).to(self.device)
                parts.append(_unit(self.model.encode_text(tokens).float().cpu().numpy()))
        per_prompt = np.concatenate(parts).reshape(len(names), len(self.templates), -1)
        return _unit(per_prompt.mean(axis=1))

    def __repr__(self) -> str:
        return f"ClipProbe(name={self.name!r}, dim={self.dim}, templates={len(self.templates)})"


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def zero_shot_labels(image_features: np.ndarray, text_features: np.ndarray, logit_scale: float,
                     m: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``m`` best names: ``classes (n, m)`` int64 indices into the vocabulary of
    ``text_features (V, dim)`` and their probabilities ``(n, m)``, from the softmax over the vocabulary of
    ``logit_scale`` x cosine similarity (rows of both inputs unit-length)."""
    image_features = np.asarray(image_features, dtype=np.float32)
    text_features = np.asarray(text_features, dtype=np.float32)
    shapes_match = image_features.shape[-1] == text_features.shape[-1]
    if image_features.ndim != 2 or text_features.ndim != 2 or not shapes_match:
        raise ValueError(f"image features {image_features.shape} and text features {text_features.shape} "
                         "must be (n, dim) and (V, dim)")
    logits = torch.from_numpy(image_features) @ torch.from_numpy(text_features).T
    return top_classes(float(logit_scale) * logits, m)


def centroids(features: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups, dim)`` float32: per group of ``groups (n,)``, the unit-length mean of its rows of
    ``features (n, dim)`` (zeros for an empty group): the direction a text query is compared with."""
    features, groups = np.asarray(features, dtype=np.float32), np.asarray(groups, dtype=np.int64)
    sums = np.zeros((n_groups, features.shape[1]), dtype=np.float32)
    np.add.at(sums, groups, features)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """``"open_clip:<model>/<tag or path or none>"`` -> (model, pretrained or None). The projected image
    features are the space text lives in, so a pooling suffix other than ``#image_features`` is refused."""
    if not str(spec).startswith(OPEN_CLIP_PREFIX):
        raise ValueError(f"CLIP labels need an open_clip model, 'open_clip:<model>/<tag or checkpoint>' "
                         f"(e.g. 'open_clip:ViT-B-32/openai'); got {spec!r}")
    if str(spec).endswith("#tokens"):
        raise ValueError(f"{spec!r}: CLIP labels compare images with text in the projected space "
                         "(image_features); drop '#tokens'")
    model, pretrained, _ = parse_open_clip_spec(spec)
    return model, pretrained


def check_clip_weights(spec: str) -> None:
    """Raise `MissingWeightsError` (fast, no download retries offline) unless the weights of ``spec`` are
    here; `ValueError` for an unknown model or tag."""
    import open_clip

    model, pretrained = parse_clip_spec(spec)
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r} in {spec!r}")
    if pretrained is not None:
        resolve_open_clip_weights(model, pretrained)


def make_clip_probe(spec: str, device: str | torch.device = "cpu", batch_size: int = 32) -> ClipProbe:
    """The `ClipProbe` named by ``spec`` (``"open_clip:ViT-B-32/openai"``)."""
    model, pretrained = parse_clip_spec(spec)
    return ClipProbe(model, pretrained, device=device, batch_size=batch_size)
