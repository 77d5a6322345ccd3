"""The run store: one diskcache directory per precompute run, written by `precompute`, read by `app`.

`store.schema` says what every key holds: one record class per stored value (``meta``, ``stage:<name>``,
``references``, ``scan``, ``image:<dataset index>``, ``<kind>:<neuron>`` for kind in `NEURON_KINDS`,
``summary``, ``method_comparison``, ``distance_correlation``), its version, and the key table.
`RunStore.write(record, index)` / `RunStore.read(Record, index)` store and load them; docs/contracts.md's
store section is generated from the schema (``python -m store --write docs/contracts.md``).
"""

from store.run_store import (
    STAGES,
    RunInfo,
    RunStore,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
    list_runs,
    run_id_for,
)
from store.schema import KEY_TABLE, NEURON_KINDS, SCHEMA_VERSION

__all__ = [
    "KEY_TABLE",
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
