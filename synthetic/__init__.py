"""The synthetic world, its demo net and the ground-truth harness: a plugin of `pure_core`.

Importing this package registers the model ``"demo"`` (the trained demo net; `synthetic.demo`) and the
dataset kind ``"world"`` (`synthetic.source`) in `pure_core.registry`. pyproject.toml declares it under the
``pure_explorer.plugins`` entry points, so `pure_core.registry.load_plugins` finds it; pure_core itself
never imports it.
"""

from __future__ import annotations

from pure_core.models import LoadedModel, MissingWeightsError, ModelSpec
from pure_core.registry import register_model, register_source
from pure_core.sources import SourceKind
from synthetic import demo
from synthetic.source import open_world

__all__ = ["build_demo"]


@register_model("demo")
def build_demo(spec: ModelSpec, fetch_missing: bool = True) -> LoadedModel:
    """The trained demo net (trained now when its checkpoint is missing, unless ``fetch_missing`` is False),
    its preprocessing, its classes ("<concept> or <concept>") and its default layer pair."""
    try:
        model = demo.load_demo_model(spec.checkpoint, train_if_missing=fetch_missing, progress=fetch_missing)
    except FileNotFoundError as error:
        expected = str(spec.checkpoint or demo.default_checkpoint_path())
        raise MissingWeightsError(str(error), expected=expected) from error
    classes = model.demo_meta.get("world", {}).get("classes") or []
    categories = [" or ".join(c) if isinstance(c, (list, tuple)) else str(c) for c in classes] or None
    return LoadedModel(model, demo.DEMO_PREPROCESSING, categories, spec,
                       default_layers=(demo.DEMO_LAYER, demo.DEMO_LOWER_LAYER))


register_source("world")(SourceKind(open_world))
