"""The app's store access: records read from the stores, the ranking, lower-layer runs, and no writes."""

import numpy as np

from app import sheets, store_access
from store import list_runs
from store.schema import NeuronScores, UmapCoordinates


def _run(root, name="small"):
    return store_access.run_ref(next(r for r in list_runs(root) if r.directory.name == name))


def test_run_details_carry_the_typed_meta(small_runs_root):
    details = store_access.run_details(_run(small_runs_root))
    assert (details.meta.layer, details.meta.lower_layer, details.meta.seed) == ("layer2", "layer1", 0)
    assert details.n_neurons == 6 and details.n_ref == 24 and all(details.stages_done.values())


def test_neuron_data_is_read_only_float32_with_its_records(small_runs_root):
    data = store_access.neuron_data(_run(small_runs_root), 20)
    assert data.pure.dtype == np.float32 and data.pure.shape == (24, 64) and not data.pure.flags.writeable
    assert isinstance(data.scores, NeuronScores) and isinstance(data.umap, UmapCoordinates)
    assert data.planted_concepts is not None and len(set(data.planted_concepts)) == 2
    assert len(data.thumbnails) == data.n_references == 24
    assert store_access.neuron_data(_run(small_runs_root), 999) is None


def test_ranking_orders_by_polysemanticity(small_runs_root):
    table = store_access.ranking(_run(small_runs_root))
    assert list(table["rank"]) == list(range(1, 7))
    assert list(table["polysemanticity"]) == sorted(table["polysemanticity"], reverse=True)
    assert {"oracle_kind", "oracle_polysemanticity"} <= set(table.columns)


def test_lower_layer_run_is_found_by_model_and_layer(small_runs_root):
    lower = store_access.lower_layer_run(str(small_runs_root), _run(small_runs_root))
    assert lower is not None and lower.name == "small-lower"
    assert store_access.lower_layer_run(str(small_runs_root), _run(small_runs_root, "small-lower")) is None


def test_reading_never_writes_to_the_store(small_runs_root):
    store_dir = small_runs_root / "small"
    before = {p.name: p.stat().st_mtime_ns for p in store_dir.iterdir()}
    run = _run(small_runs_root)
    sheets.reference_sheet(run, 3, 2, "pure", 0)
    sheets.thumbnail_strips(run, [3, 7])
    assert {p.name: p.stat().st_mtime_ns for p in store_dir.iterdir()} == before


def test_the_data_layer_never_imports_figures():
    import ast
    from pathlib import Path

    app = Path(__file__).resolve().parents[1] / "app"
    for module in ("store_access.py", "analysis.py", "model_cache.py"):
        tree = ast.parse((app / module).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "app.figures" not in imported and "figures" not in names and "app.sheets" not in imported, (
            module
        )
