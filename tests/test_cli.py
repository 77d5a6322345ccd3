"""pure_explorer.cli: `pure-explorer COMMAND` does what its `python -m` / `streamlit run` form does."""

from __future__ import annotations

import json
import subprocess
import sys

from precompute.inspect import main as inspect_main
from pure_explorer import app_script, cli


def test_help_lists_every_command_and_a_missing_command_is_an_error(capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in ["precompute", "inspect", "train-demo", "app"])
    assert cli.main([]) == 2 and "usage: pure-explorer" in capsys.readouterr().err
    assert cli.main(["serve"]) == 2 and "unknown command 'serve'" in capsys.readouterr().err


def test_inspect_prints_what_precompute_inspect_prints(small_store, capsys):
    assert inspect_main([str(small_store), "--top", "3"]) == 0
    expected = capsys.readouterr().out
    assert cli.main(["inspect", str(small_store), "--top", "3"]) == 0
    assert capsys.readouterr().out == expected and expected.startswith("run ")


def test_precompute_runs_the_module_with_the_arguments_given(small_store, capsys):
    assert cli.main(["precompute", "--help"]) == 0 and "--preset" in capsys.readouterr().out
    assert cli.main(["precompute", "inspect", str(small_store.parent / "nothing")]) == 2
    assert "no run store" in capsys.readouterr().err


def test_train_demo_runs_the_synthetic_package_module(capsys):
    assert cli.main(["train-demo", "--help"]) == 0 and "demo net" in capsys.readouterr().out


def test_exit_statuses_are_the_interpreters(monkeypatch, capsys):
    """A returned int or None, or `sys.exit` with one: that status; `sys.exit("message")`: printed, 1."""
    outcomes = iter([3, None, SystemExit(4), SystemExit(None), SystemExit("precompute: cannot go on")])

    def main(argv: list[str]) -> int | None:
        outcome = next(outcomes)
        if isinstance(outcome, SystemExit):
            raise outcome
        return outcome

    monkeypatch.setattr("precompute.__main__.main", main)
    assert [cli.main(["precompute"]) for _ in range(5)] == [3, 0, 4, 0, 1]
    assert capsys.readouterr().err == "precompute: cannot go on\n"


def test_app_becomes_streamlit_run_on_the_installed_script(monkeypatch):
    """The process is replaced (signals reach Streamlit), options and script arguments pass through."""
    replaced = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: replaced.append((path, argv)))
    cli.run_app(["--server.port", "8502", "--", "--runs-dir", "runs"])
    assert replaced == [(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app_script()),
                                          "--server.port", "8502", "--", "--runs-dir", "runs"])]
    assert app_script().is_file() and app_script().parent.name == "app"


def test_python_dash_m_pure_explorer_is_the_command(small_store):
    result = subprocess.run([sys.executable, "-m", "pure_explorer", "inspect", str(small_store), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["directory"] == str(small_store)


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses a socket of this machine listens on at ``port`` (from /proc/net/tcp, state 0A)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_the_app_keeps_its_hosting_settings_wherever_it_is_started(small_runs_root, tmp_path):
    """`pure-explorer app` started outside the checkout (no .streamlit/ in the working directory) still uses
    the dashboard's own settings, installed beside its script: here, it listens on localhost only."""
    from pure_explorer.live_app import free_port, serve

    port = free_port()
    command = [sys.executable, "-m", "pure_explorer", "app", "--server.headless", "true",
               "--server.port", str(port), "--server.fileWatcherType", "none"]
    with serve(small_runs_root, command=command, cwd=tmp_path, port=port):
        assert _listening_addresses(port) == {"127.0.0.1"}
