"""``python -m precompute --chain L0,L1,...``: one run per layer pair, stored beside the top one."""

from __future__ import annotations

import pytest


def test_a_chain_is_one_run_per_layer_pair_beside_the_top_one():
    from precompute.__main__ import build_parser, chain_pairs
    from precompute.config import ConfigError

    flags = ["--preset", "tiny", "--chain", "block4, block3,block2", "--out", "runs/x/"]
    args = build_parser().parse_args(flags)
    pairs = chain_pairs(args)
    assert [(p.layer, p.lower_layer, p.out, p.neurons) for p in pairs] == [
        ("block4", "block3", "runs/x/", None), ("block3", "block2", "runs/x-block3", "all")]
    assert all(p.chain is None and p.preset == "tiny" for p in pairs)
    limited = chain_pairs(build_parser().parse_args(["--chain", "a,b,c", "--neurons", "0-7"]))
    assert [(p.out, p.neurons) for p in limited] == [(None, "0-7"), (None, "0-7")]
    for bad in (["--chain", "block4"], ["--chain", "a,b", "--layer", "a"]):
        with pytest.raises(ConfigError, match="--chain"):
            chain_pairs(build_parser().parse_args(bad))
