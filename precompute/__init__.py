"""The precompute job: (model, layer pair, dataset, embedder) -> a run store the dashboard reads.

Run it with ``python -m precompute`` (see `precompute.__main__`); stages live in `precompute.stages`,
configuration in `precompute.config`, image sources in `precompute.datasets`.
"""

from precompute.config import PRESETS, ConfigError, RunConfig, resolve_config

__all__ = ["PRESETS", "ConfigError", "RunConfig", "resolve_config"]
