"""Shared fixtures: small but internally consistent run stores for the app's tests (written by
`pure_explorer.fixtures.write_small_store` through the store's records, in milliseconds), and a real store
made by `python -m precompute` with a tiny config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pure_explorer.fixtures import LOWER_NEURONS, SMALL_NEURONS, write_small_store
from pure_explorer.live_app import chromium, chromium_path


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `browser` need Debian's chromium and Playwright: skip them, saying so, when either is
    missing (CI installs both), before their fixtures build a store or start a server."""
    if item.get_closest_marker("browser") is None:
        return
    if chromium_path() is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.async_api")


TINY_CLIP = "pure-test-tiny-clip"


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (`pure_explorer.live_app.chromium`; Playwright's sync API drives one at a
    time)."""
    with chromium() as running:
        yield running


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory) -> str:
    """A 2-layer, width-64, 32 px CLIP config (image and text towers, open_clip's own tokenizer) registered
    with open_clip in this process; builds in milliseconds. Returns its model name."""
    import open_clip

    directory = tmp_path_factory.mktemp("open_clip_config")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (directory / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(directory)
    return TINY_CLIP


@pytest.fixture(scope="session")
def small_runs_root(tmp_path_factory) -> Path:
    """A runs root with two complete small runs of the same model: `small` (layer2, circuits in layer1) and
    `small-lower` (layer1 itself, so the circuits' lower channels have their own references)."""
    root = tmp_path_factory.mktemp("runs")
    write_small_store(root / "small")
    write_small_store(
        root / "small-lower",
        neurons=LOWER_NEURONS,
        layer="layer1",
        lower_layer="conv1",
        c_lower=64,
        c_layer=64,
        n_ref=8,
        seed=1,
    )
    return root


@pytest.fixture(scope="session")
def small_store(small_runs_root) -> Path:
    """The directory of the complete small run (`small_runs_root / "small"`)."""
    return small_runs_root / "small"


@pytest.fixture(scope="session")
def partial_runs_root(tmp_path_factory) -> Path:
    """A runs root holding one run whose precompute stopped after the attributions stage."""
    root = tmp_path_factory.mktemp("partial")
    write_small_store(
        root / "computing",
        neurons={3: SMALL_NEURONS[3], 12: SMALL_NEURONS[12]},
        stages=("references", "attributions"),
    )
    return root


@pytest.fixture(scope="session")
def missing_model_runs_root(tmp_path_factory) -> Path:
    """A complete small run whose model checkpoint does not exist (the upload page must say so)."""
    root = tmp_path_factory.mktemp("missing-model")
    write_small_store(
        root / "orphan",
        neurons={3: SMALL_NEURONS[3], 12: SMALL_NEURONS[12]},
        model={"name": "demo", "weights": None, "checkpoint": str(root / "no-such-model.pt")},
    )
    return root


# -- the real demo store, made by `python -m precompute` ----------------------------------------------------
DEMO_PRECOMPUTE_ARGS = os.environ.get("PURE_TEST_PRECOMPUTE_ARGS", "--preset tiny --no-progress")


@pytest.fixture(scope="session")
def demo_runs_root(tmp_path_factory) -> tuple[Path, str]:
    """(root, kind): a runs root with a real store made by `python -m precompute` with a tiny config (kind
    "precompute"), or the prebuilt root named by ``$PURE_TEST_DEMO_RUNS`` (kind "prebuilt")."""
    prebuilt = os.environ.get("PURE_TEST_DEMO_RUNS")
    if prebuilt:
        return Path(prebuilt).resolve(), "prebuilt"
    root = tmp_path_factory.mktemp("demo-runs")
    command = [sys.executable, "-m", "precompute", *DEMO_PRECOMPUTE_ARGS.split(), "--out", str(root / "demo")]
    result = subprocess.run(
        command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return root, "precompute"


@pytest.fixture(scope="session")
def chain_runs_root(tmp_path_factory) -> Path:
    """A runs root with a chain of two layer pairs made by ``python -m precompute --chain
    block4,block3,block2`` (tiny preset, channels 0-23 of each layer): ``demo`` (block4 <- block3, with
    block2 as depth layer) and ``demo-block3`` (block3 <- block2)."""
    chain = tmp_path_factory.mktemp("chain-runs")
    args = [*DEMO_PRECOMPUTE_ARGS.split(), "--chain", "block4,block3,block2", "--neurons", "0-23"]
    command = [sys.executable, "-m", "precompute", *args, "--out", str(chain / "demo")]
    result = subprocess.run(
        command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return chain


# -- databases for the annotations: SQLite always, PostgreSQL on a throwaway local server --------------------
def _postgres_binaries() -> Path | None:
    """The directory of Debian's (or any) PostgreSQL server binaries, None when not installed."""
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for this test session on a Unix socket (no TCP): ``$PURE_TEST_POSTGRES_URL``
    when set, else a throwaway cluster (initdb + pg_ctl, as the ``postgres`` user when run as root). CI must
    exercise it: there a missing server fails instead of skipping. Yields a URL to its ``postgres`` db."""
    import pwd
    import shutil
    import tempfile

    given = os.environ.get("PURE_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    binaries = _postgres_binaries()
    if binaries is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="pure-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = directory / "data", 5400 + os.getpid() % 500

    def command(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, text=True, timeout=120)

    command(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    command(str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(directory / "log"), "-o",
            f"-k {directory} -p {port} -c listen_addresses='' -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={directory}&port={port}"
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database of each kind: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session")
def make_postgres_database(postgres_server):
    """A function that makes a new, empty database on the session's PostgreSQL server (for fixtures of any
    scope) and returns its URL."""
    return lambda: new_postgres_database(postgres_server)


def new_postgres_database(server_url: str) -> str:
    """A new, empty database on the test session's PostgreSQL server; its URL."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=server.query["host"], port=server.query["port"], user="postgres",
                         dbname="postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def vega_rows():
    """A function: the rows a Vega-Lite chart element of an AppTest run (``at.get("vega_lite_chart")[i]``)
    sends to the browser, its unnamed data and named datasets concatenated, as a DataFrame."""
    import pandas as pd
    import pyarrow as pa

    def rows(element) -> pd.DataFrame:
        data = [element.proto.data.data] if element.proto.data.data else []
        data += [d.data.data for d in element.proto.datasets]
        frames = [pa.ipc.open_stream(d).read_all().to_pandas() for d in data]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    return rows
