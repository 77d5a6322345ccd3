"""Vocabularies for zero-shot labels (`pure_core.clip_labels`): the default one and user files.

The default vocabulary is what a vision neuron is usually about: the 1000 ImageNet classes (OpenAI's
curated CLIP names, as shipped by open_clip), the 47 texture words of the Describable Textures Dataset, a
short list of object parts, and the basic colour terms. A user vocabulary is a UTF-8 text file with one name
per line (blank lines and lines starting with ``#`` are skipped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "COLOURS",
    "MAX_NAME_CHARS",
    "MAX_NAMES",
    "PARTS",
    "TEXTURES",
    "VocabularyError",
    "default_vocabulary",
    "read_vocabulary",
    "vocabulary_fingerprint",
]

# The Describable Textures Dataset's 47 categories (Cimpoi et al., CVPR 2014).
TEXTURES = (
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved",
    "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
    "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled",
    "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven",
    "wrinkled", "zigzagged",
)
PARTS = (
    "eye", "nose", "snout", "mouth", "ear", "face", "head", "fur", "feather", "beak", "wing", "tail", "leg",
    "paw", "hand", "hair", "skin", "scales", "horn", "wheel", "window", "door", "roof", "handle", "screen",
    "text", "logo", "leaf", "flower petal", "water", "sky", "grass", "sand", "snow",
)
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")

MAX_NAMES = 100_000  # a vocabulary's text features are computed once per run; this bounds that work
MAX_NAME_CHARS = 200


class VocabularyError(ValueError):
    """A vocabulary file cannot be used (the message names the file and line)."""


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` stripped, without blanks and without repeats (ignoring case), first occurrence kept."""
    seen: set[str] = set()
    out = []
    for name in names:
        name = " ".join(str(name).split())
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            out.append(name)
    return tuple(out)


def default_vocabulary() -> tuple[str, ...]:
    """ImageNet's classes, then textures, parts and colours (repeats dropped, first kept)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return _unique((*IMAGENET_CLASSNAMES, *TEXTURES, *PARTS, *COLOURS))


def read_vocabulary(path: str | Path) -> tuple[str, ...]:
    """The names in the text file at ``path``: one per line; blank lines and ``#`` comments skipped,
    whitespace collapsed, repeats (ignoring case) dropped. `VocabularyError` for a missing, binary, empty or
    oversized file, or a line longer than `MAX_NAME_CHARS`."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocabularyError(f"vocabulary file {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise VocabularyError(f"vocabulary file {path} is not UTF-8 text ({error.reason} at byte "
                              f"{error.start})") from None
    except OSError as error:
        raise VocabularyError(f"vocabulary file {path} cannot be read: {error.strerror}") from None
    names = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_NAME_CHARS or "\x00" in line:
            raise VocabularyError(f"vocabulary file {path}, line {number}: a name is one line of at most "
                                  f"{MAX_NAME_CHARS} characters of text")
        names.append(line)
    names = _unique(names)
    if not names:
        raise VocabularyError(f"vocabulary file {path} holds no name (one name per line; # starts a comment)")
    if len(names) > MAX_NAMES:
        raise VocabularyError(f"vocabulary file {path} holds {len(names)} names; at most {MAX_NAMES}")
    return names


def vocabulary_fingerprint(names: Iterable[str]) -> str:
    """A short hash of the names in order: what a run's identity records instead of a file's location."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
