"""The Dockerfile's entrypoint, run outside Docker (no Docker engine on our machines; CI lints the file with
hadolint): only what the image COPYs, installed as the image installs it (`pip install --no-deps .`), under
the image's ENV, with its exact CMD and HEALTHCHECK commands, serving a real store that must not change while
the app reads it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import setuptools

from pure_explorer.live_app import ALL_CHARTS_DRAWN, IDLE, chromium, free_port, new_page, serve
from store import list_runs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "app" / ".streamlit" / "config.toml"  # Streamlit's settings, installed with the app


def parse_dockerfile(path: Path) -> dict:
    """The instructions this test needs: FROM, ENV (dict), WORKDIR, COPY (list of (sources, destination)),
    RUN (list of commands), USER, CMD and the HEALTHCHECK's CMD (exec-form lists). Continuation lines are
    joined; comments are dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    parsed: dict = {"ENV": {}, "COPY": [], "RUN": []}
    for line in filter(None, lines):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ENV":
            parsed["ENV"].update(pair.split("=", 1) for pair in shlex.split(rest))
        elif instruction == "COPY":
            *sources, destination = shlex.split(rest)
            parsed["COPY"].append((sources, destination))
        elif instruction == "RUN":
            parsed["RUN"].append(rest)
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
    assert env["PURE_ANNOTATIONS_URL"] == "sqlite:////notes/annotations.sqlite"  # a volume, not /runs
    assert DOCKERFILE["CMD"] == ["pure-explorer", "app"]
    assert "/_stcore/health" in " ".join(DOCKERFILE["HEALTHCHECK"])
    assert DOCKERFILE["EXPOSE"] == env["STREAMLIT_SERVER_PORT"]


def test_the_image_installs_the_project_after_its_pinned_dependencies():
    """Dependencies from requirements.txt without its `-e .` line (a layer that survives source changes),
    then the project from its copied sources (the step the `image` fixture mirrors)."""
    runs = DOCKERFILE["RUN"]
    dependencies = next(i for i, run in enumerate(runs) if "requirements.txt" in run)
    install = next(i for i, run in enumerate(runs) if "pip install --no-deps ." in run)
    assert "grep -v '^-e' requirements.txt" in runs[dependencies] and dependencies < install
    assert (ROOT / "requirements.txt").read_text().splitlines()[-1] == "-e ."


def test_secrets_never_enter_the_image():
    copied = [source for sources, _ in DOCKERFILE["COPY"] for source in sources]
    assert not {".", "./", ".streamlit", ".streamlit/"} & set(copied), "a COPY would take secrets.toml along"
    for ignore in (".dockerignore", ".gitignore"):  # also a secrets.toml put beside the app's config.toml
        lines = (ROOT / ignore).read_text().splitlines()
        assert ".streamlit/secrets.toml" in lines and "**/.streamlit/secrets.toml" in lines


def test_hosting_defaults_in_the_copied_streamlit_config():
    config = tomllib.loads(CONFIG.read_text())
    server = config["server"]
    from app.uploads import MAX_UPLOAD_MB

    assert server["maxUploadSize"] == MAX_UPLOAD_MB
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert config["client"]["showErrorDetails"] == "none"  # no traceback or server path reaches a visitor
    assert config["runner"]["postScriptGC"] is False  # a full collection after each run delayed a k change
    assert config["runner"]["magicEnabled"] is False  # compiling through an AST rewrite cost 4x the time


def test_no_page_writes_a_bare_expression_so_streamlit_magic_can_stay_off():
    """With magic off, a bare expression in a page script would show nothing where it showed a value."""
    import ast

    scripts = [ROOT / "app" / "main.py", *sorted((ROOT / "app" / "views").glob("*.py"))]
    bare = [
        f"{script.name}:{node.lineno}"
        for script in scripts
        for node in ast.walk(ast.parse(script.read_text()))
        if isinstance(node, ast.Expr) and not isinstance(node.value, (ast.Call, ast.Await))
        and not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))  # docstrings
    ]
    assert len(scripts) > 5 and bare == []


def test_an_open_instance_listens_on_localhost_and_only_the_container_binds_every_interface():
    server = tomllib.loads(CONFIG.read_text())["server"]
    assert server["address"] == "localhost"
    assert DOCKERFILE["ENV"]["STREAMLIT_SERVER_ADDRESS"] == "0.0.0.0"  # the container's port is published


def _image_tree(tmp_path: Path) -> Path:
    """The image's WORKDIR: exactly the COPYed sources, where Docker puts them (a directory's contents into
    the destination; a file into a destination ending in /): a missing COPY fails here, not in production."""
    workdir = tmp_path / DOCKERFILE["WORKDIR"].strip("/")
    workdir.mkdir(parents=True)
    for sources, destination in DOCKERFILE["COPY"]:
        target = workdir / destination
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                if destination.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)  # into the directory ``target``, or as the file
    return workdir


@dataclass(frozen=True)
class InstalledImage:
    """The image's WORKDIR, the site-packages its sources were installed into, and the environment that
    puts that directory first (its packages, its commands)."""

    workdir: Path
    site_packages: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> InstalledImage:
    """The `_image_tree` and the image's `pip install --no-deps .` of it, into a site-packages directory of
    its own (offline: the build backend is this environment's setuptools)."""
    workdir = _image_tree(tmp_path_factory.mktemp("image"))
    target = workdir.parent / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--target", str(target), "."],
        cwd=workdir, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    path = f"{target / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return InstalledImage(workdir, target, {"PYTHONPATH": str(target), "PATH": path})


def test_the_image_holds_every_package_of_the_project(image):
    """Every package the checkout has (by pyproject's package list) is installed from the copied sources,
    the `pure-explorer` command with them: nothing falls back to this checkout's editable install."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    expected = {name.split(".")[0] for name in setuptools.find_packages(ROOT, include=find["include"])}
    installed = {p.name for p in image.site_packages.iterdir() if (p / "__init__.py").is_file()}
    assert expected <= installed, f"not in the image: {expected - installed}"
    # the dashboard's Streamlit settings arrive with it (package data), byte for byte
    assert (image.site_packages / "app" / ".streamlit" / "config.toml").read_bytes() == CONFIG.read_bytes()
    # and the notes' database migrations (package data: Alembic's scripts are not a package)
    migrations = image.site_packages / "annotations_db" / "migrations"
    assert (migrations / "env.py").is_file() and (migrations / "versions" / "0001_annotations.py").is_file()
    command = DOCKERFILE["CMD"][0]
    assert shutil.which(command, path=image.env["PATH"]) == str(image.site_packages / "bin" / command)


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.browser
def test_the_entrypoint_serves_the_store_read_only_and_passes_its_health_check(
    demo_runs_root, image, tmp_path
):
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
        "PURE_ANNOTATIONS_URL": f"sqlite:///{tmp_path / 'notes' / 'annotations.sqlite'}",  # the /notes volume
        "STREAMLIT_SERVER_PORT": str(port),
        **image.env,
    }
    log = tmp_path / "server.log"
    with serve(root, command=DOCKERFILE["CMD"], env=env, cwd=image.workdir, port=port, log=log) as url:
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
    assert (tmp_path / "notes" / "annotations.sqlite").is_file()  # the team's notes live on their volume
