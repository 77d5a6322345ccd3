"""The Dockerfile's entrypoint, run outside Docker (no Docker engine on our machines; CI lints the file with
hadolint): only what the image COPYs, under the image's ENV, with its exact CMD and HEALTHCHECK commands,
serving a real store that must not change while the app reads it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from store import list_runs
from tests.live_app import ALL_CHARTS_DRAWN, IDLE, chromium, free_port, new_page, serve

ROOT = Path(__file__).resolve().parents[1]


def parse_dockerfile(path: Path) -> dict:
    """The instructions this test needs: FROM, ENV (dict), WORKDIR, COPY sources, USER, CMD and the
    HEALTHCHECK's CMD (exec-form lists). Continuation lines are joined; comments are dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    parsed: dict = {"ENV": {}, "COPY": []}
    for line in filter(None, lines):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ENV":
            parsed["ENV"].update(pair.split("=", 1) for pair in shlex.split(rest))
        elif instruction == "COPY":
            parsed["COPY"].append(shlex.split(rest)[:-1])
        elif instruction == "HEALTHCHECK":
            parsed["HEALTHCHECK"] = json.loads(rest[rest.index("CMD ") + 4 :])
        elif instruction == "CMD":
            parsed["CMD"] = json.loads(rest)
        else:
            parsed[instruction] = rest
    return parsed


DOCKERFILE = parse_dockerfile(ROOT / "Dockerfile")


def test_the_image_is_slim_unprivileged_headless_and_health_checked():
    assert DOCKERFILE["FROM"] == "python:3.11-slim"
    assert DOCKERFILE["USER"] not in ("root", "0")
    env = DOCKERFILE["ENV"]
    assert env["STREAMLIT_SERVER_HEADLESS"] == "true" and env["PURE_RUNS_DIR"] == "/runs"
    assert DOCKERFILE["CMD"] == ["streamlit", "run", "app/main.py"]
    assert "/_stcore/health" in " ".join(DOCKERFILE["HEALTHCHECK"])
    assert DOCKERFILE["EXPOSE"] == env["STREAMLIT_SERVER_PORT"]


def test_hosting_defaults_in_the_copied_streamlit_config():
    assert [".streamlit/"] in DOCKERFILE["COPY"]
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    from app.uploads import MAX_UPLOAD_MB

    assert server["maxUploadSize"] == MAX_UPLOAD_MB
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True


def _image_tree(tmp_path: Path) -> Path:
    """The image's WORKDIR: exactly the COPYed sources (so a missing COPY fails here, not in production)."""
    workdir = tmp_path / DOCKERFILE["WORKDIR"].strip("/")
    workdir.mkdir(parents=True)
    for sources in DOCKERFILE["COPY"]:
        for source in sources:
            target = workdir / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    return workdir


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.browser
def test_the_entrypoint_serves_the_store_read_only_and_passes_its_health_check(demo_runs_root, tmp_path):
    executable = shutil.which(DOCKERFILE["CMD"][0])
    assert executable, f"{DOCKERFILE['CMD'][0]} is not on PATH (pip install -r requirements.txt)"
    root, _ = demo_runs_root
    run = next(info for info in list_runs(root) if info.complete).directory.name
    before = _digest(root)
    port = free_port()
    env = {
        **DOCKERFILE["ENV"],
        # The volumes of `docker run`: the stores and the model caches this machine has.
        "PURE_RUNS_DIR": str(root),
        "PURE_CACHE_DIR": str(Path.home() / ".cache" / "pure-explorer"),
        "TORCH_HOME": str(Path.home() / ".cache" / "torch"),
        "HF_HOME": str(Path.home() / ".cache" / "huggingface"),
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
        "STREAMLIT_SERVER_PORT": str(port),
    }
    workdir = _image_tree(tmp_path)
    log = tmp_path / "server.log"
    with serve(root, command=DOCKERFILE["CMD"], env=env, cwd=workdir, port=port, log=log) as url:
        health = subprocess.run(
            DOCKERFILE["HEALTHCHECK"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
        )
        assert health.returncode == 0, health.stderr
        with chromium() as browser:
            page = new_page(browser)
            page.goto(f"{url}/?run={run}")
            page.get_by_text("Neurons ranked by polysemanticity").wait_for()
            page.wait_for_function(ALL_CHARTS_DRAWN)
            page.goto(f"{url}/neuron?run={run}&k=3")
            page.get_by_role("heading", name="3 virtual neurons").wait_for()
            page.wait_for_function(ALL_CHARTS_DRAWN)
            page.wait_for_timeout(150)
            page.wait_for_function(IDLE)
            assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert _digest(root) == before, "the app wrote to the store it serves (mounted read-only in the image)"
