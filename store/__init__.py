"""The run store: one diskcache directory per precompute run, written by `precompute`, read by `app`.

Layout (string keys; values pickled by diskcache, arrays compact):

- ``meta``: ``{schema_version, run_id, config, versions, created_at}``
- ``stage:<name>``: ``{done, seconds, finished_at}`` for each of `STAGES`
- ``chunk:<stage>:<id>``: marker that one chunk of a stage is written (resume granularity)
- ``references``: ``{neurons, indices, max_activations, positions}`` arrays (see pure_core.activations)
- ``image:<dataset index>``: WEBP bytes of the reference image at model-input resolution
- ``<kind>:<neuron>`` for kind in `NEURON_KINDS` (float16 arrays, lists of image bytes, dicts)
- ``summary``: the ranking table, one dict per neuron
"""

from store.run_store import (
    NEURON_KINDS,
    SCHEMA_VERSION,
    STAGES,
    RunInfo,
    RunStore,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
    list_runs,
    run_id_for,
)

__all__ = [
    "NEURON_KINDS",
    "SCHEMA_VERSION",
    "STAGES",
    "RunInfo",
    "RunStore",
    "StoreError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "list_runs",
    "run_id_for",
]
