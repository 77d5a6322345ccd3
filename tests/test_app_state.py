"""Query-parameter validation and the runs directory: bad values are ignored with a notice, never raised."""

from pathlib import Path

import pytest

from app import state


def test_runs_root_prefers_the_flag_then_the_environment_then_runs():
    assert state.runs_root(["--runs-dir", "/data/runs"], {"PURE_RUNS_DIR": "/env"}) == Path("/data/runs")
    assert state.runs_root([], {"PURE_RUNS_DIR": "/env"}) == Path("/env")
    assert state.runs_root([], {}) == Path("runs")


def test_runs_root_ignores_unrelated_arguments_such_as_pytests():
    assert state.runs_root(["tests/test_app_state.py", "-k", "x", "--runs"], {}) == Path("runs")


@pytest.mark.parametrize(("raw", "expected"), [("12", 12), (["3", "12"], 12), ("12.0", 12), (" 7 ", 7)])
def test_valid_neurons_are_read(raw, expected):
    assert state.parse_neuron(raw, [3, 7, 12]) == (expected, None)


@pytest.mark.parametrize("raw", ["abc", "1.5", "99", "-3", "1e999", "nan", "12; DROP TABLE"])
def test_invalid_neurons_give_a_notice(raw):
    value, notice = state.parse_neuron(raw, [3, 7, 12])
    assert value is None and notice.startswith("Ignored `neuron=")


def test_absent_values_give_neither_value_nor_notice():
    assert state.parse_neuron(None, [1]) == (None, None)
    assert state.parse_k("", 8) == (None, None)
    assert state.parse_run(None, ["a"]) == (None, None)


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("3", 3), ("8", 8)])
def test_k_in_range(raw, expected):
    assert state.parse_k(raw) == (expected, None)


@pytest.mark.parametrize("raw", ["0", "9", "-1", "two", "2.5", "1" * 400])
def test_k_out_of_range_is_ignored(raw):
    value, notice = state.parse_k(raw)
    assert value is None and "k must be a whole number from 1 to 8" in notice
    assert len(notice) < 200  # long junk is cut, not echoed


def test_unknown_run_is_ignored():
    assert state.parse_run("demo", ["demo", "other"]) == ("demo", None)
    value, notice = state.parse_run("../../etc", ["demo"])
    assert value is None and "no such run" in notice


def test_neuron_search_box():
    assert state.parse_neuron_filter("3, 12 20") == {3, 12, 20}
    assert state.parse_neuron_filter("abc") is None
    assert state.parse_neuron_filter("4 legs") is None and state.parse_neuron_filter("dog 12") is None  # text
    assert state.parse_neuron_filter("") is None


def test_k_is_clamped_to_the_references():
    assert state.clamp_k(5, 3) == 3
    assert state.clamp_k(12, 100) == 8
    assert state.clamp_k(2, 0) == 1


def test_a_trail_round_trips_and_malformed_crumbs_are_dropped():
    crumbs = [state.Crumb("demo", 17, 2, 1), state.Crumb("lab:resnet", 3, 3, 2)]
    text = state.encode_trail(crumbs)
    assert text == "demo:17:2:1,lab:resnet:3:3:2"
    assert state.parse_trail(text, ["demo", "lab:resnet"]) == crumbs
    junk = "ghost:1:2:1,demo:x:2:1,demo:-4:2:1,demo:4:9:1,demo:4:2:3,demo:4:2,<b>:1:2:1,demo:5:3:3"
    assert state.parse_trail(junk, ["demo"]) == [state.Crumb("demo", 5, 3, 3)]
    assert state.parse_trail(None, ["demo"]) == []
    long = ",".join(f"demo:{n}:2:1" for n in range(20))
    assert [c.neuron for c in state.parse_trail(long, ["demo"])] == list(range(12, 20))
