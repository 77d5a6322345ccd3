"""Image sources: a folder of images (ImageFolder layout or flat), a .txt list of image paths, or any kind
registered with `pure_core.registry.register_source` (the synthetic world registers ``"world"``).

Every source has a stable order (sorted relative paths; list order; a generated source's index), so a
dataset index names the same image in every run and after a resume. Images that cannot be decoded are
skipped (and counted) by the caller; a source with no images at all raises `DatasetError` naming the path.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pure_core.registry import SOURCES, load_plugins, register_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetConfig",
    "DatasetError",
    "FileSource",
    "GroundTruth",
    "ImageSource",
    "SourceKind",
    "UnreadableImageError",
    "check_dataset_path",
    "dataset_config_from_string",
    "iterate_batches",
    "open_folder",
    "open_list",
    "open_source",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                    ".jfif")


class DatasetError(ValueError):
    """The dataset cannot be used (missing, empty, all images unreadable); the message names the path."""


class UnreadableImageError(OSError):
    """One image of a dataset cannot be read or decoded."""


@dataclass
class DatasetConfig:
    """Where images come from. ``kind``: "folder" | "list" | a registered generated kind (e.g. "world");
    ``path``: folder or list file; ``n_images`` caps a folder/list to its first n images, or sizes a
    generated source; ``seed``/``size_px``: a generated source's seed and image side (None: its default)."""

    kind: str = "folder"
    path: str | None = None
    n_images: int | None = None
    seed: int | None = None
    size_px: int | None = None


@dataclass(frozen=True)
class SourceKind:
    """A registered dataset kind: ``open(config) -> ImageSource``; ``takes_path``: the kind reads files at
    ``config.path`` (checked before anything heavy runs)."""

    open: Callable[[DatasetConfig], ImageSource]
    takes_path: bool = False


def dataset_config_from_string(text: str) -> DatasetConfig:
    """A generated kind ``"<kind>"`` or ``"<kind>:<n_images>"`` (e.g. ``"world:3000"``); a ``.txt`` list
    file; anything else a folder of images."""
    text = str(text).strip()
    kind, _, n = text.partition(":")
    load_plugins()
    entry = SOURCES.find(kind)
    if entry is not None and not entry.takes_path:
        if n and not n.isdigit():
            raise DatasetError(f"--dataset {text!r}: use '{kind}' or '{kind}:<n_images>'")
        return DatasetConfig(kind=kind, n_images=int(n) if n else None)
    kind = "list" if text.lower().endswith(".txt") else "folder"
    return DatasetConfig(kind=kind, path=text, n_images=None)


@dataclass(frozen=True)
class GroundTruth:
    """What a source with planted ground truth knows about a set of references: ``embeddings (n, D)``, an
    ideal embedding of each crop (the oracle judge of the polysemanticity score), ``concepts`` the planted
    concept of each reference, ``kind`` the neuron's planted kind (e.g. "polysemantic" / "monosemantic")."""

    embeddings: np.ndarray
    concepts: list[str]
    kind: str


class ImageSource(ABC):
    """A finite, ordered collection of images: ``len(source)``, ``source.load(i) -> PIL RGB``."""

    kind: str = ""
    path: str | None = None
    parallel_loading: bool = True  # whether worker processes speed up `load` (files: yes; generated: no)

    @abstractmethod
    def __len__(self) -> int:
        """How many images the source holds."""

    @abstractmethod
    def load(self, index: int) -> Image.Image:
        """Image ``index`` as an RGB PIL image; raises `UnreadableImageError`."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """Where image ``index`` comes from (file path or world index), for messages."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the images' content (part of the run identity)."""

    def dataset_label(self, index: int) -> str | None:
        """The dataset's own label of image ``index`` (its class folder, planted concept, ...), None where the
        source has none (the default)."""
        return None

    def ground_truth(self, indices: Sequence[int], boxes: np.ndarray) -> GroundTruth | None:
        """Planted ground truth of the images ``indices`` seen through crop ``boxes (n, 4)`` (top, left,
        bottom, right), for sources that have it; None (the default) for real data."""
        return None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.path}" if self.path else self.kind


class FileSource(ImageSource):
    """Image files: every image under a folder (recursive, sorted by relative path; covers the ImageFolder
    layout ``root/<class>/<image>``), or the lines of a list file (relative to the list's folder)."""

    def __init__(self, kind: str, path: str | Path, files: Sequence[Path], root: Path):
        self.kind = kind
        self.path = str(path)
        self.files = list(files)
        self.root = root

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Image.Image:
        file = self.files[index]
        try:
            with Image.open(file) as image:
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise UnreadableImageError(f"{file}: {reason}") from error

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def relative_path(self, index: int) -> str:
        file = self.files[index]
        try:
            return file.relative_to(self.root).as_posix()
        except ValueError:
            return str(file)

    def dataset_label(self, index: int) -> str | None:
        """The class folder of an ImageFolder tree: the first folder under the root (None for an image
        directly in the root)."""
        parts = self.relative_path(index).split("/")
        return parts[0] if len(parts) > 1 else None

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for i, file in enumerate(self.files):
            try:
                size = file.stat().st_size
            except OSError:
                size = -1
            digest.update(f"{self.relative_path(i)}\t{size}\n".encode())
        return {"kind": self.kind, "n_files": len(self.files), "listing_sha256": digest.hexdigest()[:32]}


def _scan_folder(root: Path) -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in names:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(directory) / name)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read image list {path}: {getattr(error, 'strerror', None) or error}") \
            from error
    files = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        file = Path(line).expanduser()
        files.append(file if file.is_absolute() else path.parent / file)
    return files


def _source_kind(config: DatasetConfig) -> SourceKind:
    try:
        return SOURCES.get(config.kind)
    except ValueError as error:
        raise DatasetError(str(error)) from error


def check_dataset_path(config: DatasetConfig) -> None:
    """`DatasetError` at once when the kind is unknown, or a file dataset has no path or a missing one."""
    if not _source_kind(config).takes_path:
        return
    if not config.path:
        generated = [name for name in SOURCES.names() if not SOURCES.get(name).takes_path]
        raise DatasetError("no dataset given: pass --dataset <image folder | list.txt"
                           + "".join(f" | {name}" for name in generated) + ">")
    path = Path(config.path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")


def open_source(config: DatasetConfig) -> ImageSource:
    """The image source `config` names; `DatasetError` (naming the path) if it is missing or empty."""
    check_dataset_path(config)
    return _source_kind(config).open(config)


def _capped(config: DatasetConfig, files: list[Path], root: Path) -> FileSource:
    if config.n_images is not None:
        files = files[: int(config.n_images)]
    return FileSource(config.kind, Path(config.path).expanduser(), files, root)


def open_list(config: DatasetConfig) -> FileSource:
    """The images named by the lines of the list file ``config.path`` (relative to its folder)."""
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise DatasetError(f"image list {path} is not a file")
    files = _read_list(path)
    if not files:
        raise DatasetError(f"image list {path} names no images")
    return _capped(config, files, path.parent)


def open_folder(config: DatasetConfig) -> FileSource:
    """Every image under the folder ``config.path`` (recursive, sorted by relative path)."""
    path = Path(config.path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"dataset path {path} is not a folder (give a folder of images or a .txt list)")
    files = _scan_folder(path)
    if not files:
        raise DatasetError(f"no images found in {path} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
                           "recursively)")
    return _capped(config, files, path)


register_source("folder")(SourceKind(open_folder, takes_path=True))
register_source("list")(SourceKind(open_list, takes_path=True))


# -- batches for the model ---------------------------------------------------------------------------
class _TensorView(torch.utils.data.Dataset):
    """(preprocessed image (3, H, W) or None if unreadable, dataset index, error message)."""

    def __init__(self, source: ImageSource, indices: Sequence[int], to_tensor):
        self.source, self.indices, self.to_tensor = source, list(indices), to_tensor

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            return self.to_tensor(self.source.load(index)), index, None
        except UnreadableImageError as error:
            return None, index, str(error)
        except Exception as error:  # a decoder crash inside one image must not end the scan
            return None, index, f"{self.source.describe(index)}: {error}"


def _collate(items):
    good = [item for item in items if item[0] is not None]
    errors = [(item[1], item[2]) for item in items if item[0] is None]
    x = torch.stack([item[0] for item in good]) if good else None
    indices = np.array([item[1] for item in good], dtype=np.int64)
    return x, indices, errors


Batch = tuple[torch.Tensor | None, np.ndarray, list[tuple[int, str]]]


def iterate_batches(source: ImageSource, indices: Sequence[int], to_tensor, batch_size: int,
                    workers: int = 0) -> Iterator[Batch]:
    """Consecutive batches over dataset ``indices`` (in that order): ``(x (B, 3, H, W) or None, dataset
    indices (B,), [(index, error)] of unreadable images)``; loading runs in ``workers`` processes."""
    view = _TensorView(source, indices, to_tensor)
    loader = torch.utils.data.DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate, persistent_workers=False)
    yield from loader
