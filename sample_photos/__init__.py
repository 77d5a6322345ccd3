"""Photographs that ship inside installed packages, as a dataset kind: a plugin of `pure_core`.

Importing this package registers the dataset kind ``"photos"`` (`sample_photos.source`): deterministic
crops at several scales of the colour photographs in scikit-image's and scikit-learn's data, so that a real
network can be explored on real photographs with nothing downloaded. pyproject.toml declares it under the
``pure_explorer.plugins`` entry points; pure_core never imports it.
"""

from __future__ import annotations

from pure_core.registry import register_source
from pure_core.sources import SourceKind
from sample_photos.source import PHOTOGRAPHS, PhotoSource, open_photos

__all__ = ["PHOTOGRAPHS", "PhotoSource", "open_photos"]

register_source("photos")(SourceKind(open_photos))
