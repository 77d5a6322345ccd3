"""`pure-explorer`: one command for the project's entry points, each the same as its `python -m` form.

    pure-explorer precompute [ARGS...]                     # python -m precompute ARGS
    pure-explorer inspect DIR [--json] [--top N]           # python -m precompute inspect DIR ...
    pure-explorer app [STREAMLIT ARGS] [-- --runs-dir DIR]  # streamlit run <installed app/server.py> ...
    pure-explorer train-demo [ARGS...]                     # python -m synthetic ARGS

The dashboard's Streamlit settings are installed beside its script (app/.streamlit/config.toml) and hold
wherever it starts; secrets come from the working directory's .streamlit/secrets.toml (or --secrets.files).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NoReturn

from pure_explorer import app_script

# command -> (the `main(argv)` that `python -m` runs, as "module:function", imported on use; what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "precompute": ("precompute.__main__:main", "fill a run store for the dashboard (resumable); --help"),
    "inspect": ("precompute.inspect:main", "show what a run store holds (read-only): DIR [--json]"),
    "train-demo": ("synthetic.demo:main", "train the synthetic world's demo net (CPU, a few minutes)"),
}
APP_HELP = "serve the dashboard: [streamlit run options] [-- --runs-dir DIR]"


def usage() -> str:
    """The command list printed by `pure-explorer --help` (and on a missing or unknown command)."""
    rows = [(name, help_) for name, (_, help_) in COMMANDS.items()] + [("app", APP_HELP)]
    return "usage: pure-explorer COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(
        f"  {name:<12}{help_}" for name, help_ in rows
    )


def run_entry(entry: str, argv: list[str]) -> int:
    """Import ``entry`` ("module:function") now and call it with ``argv``; its exit status, as the interpreter
    makes one from a return value or `sys.exit` (None: 0; a message: printed, 1)."""
    module, _, function = entry.partition(":")
    try:
        status = getattr(importlib.import_module(module), function)(argv)
    except SystemExit as stop:
        status = stop.code
    if status is None or isinstance(status, int):
        return status or 0
    print(status, file=sys.stderr)
    return 1


def run_app(args: list[str]) -> NoReturn:
    """Replace this process with `streamlit run <installed app/server.py> args`, so that signals (Ctrl-C, a
    container's SIGTERM) reach Streamlit itself."""
    command = [sys.executable, "-m", "streamlit", "run", str(app_script()), *args]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: the command line) to the named command; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "app":
        run_app(rest)
    if command not in COMMANDS:
        print(f"pure-explorer: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    return run_entry(COMMANDS[command][0], rest)
