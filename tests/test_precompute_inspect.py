"""precompute/inspect.py as a pipeline's first command: `python -m precompute inspect DIR --json | head -1`
stops quietly when the reader has gone (as Python's docs recommend for SIGPIPE), with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_output_into_a_pipe_whose_reader_has_gone_exits_quietly(small_store):
    for extra in (["--json"], []):
        read, write = os.pipe()
        os.close(read)  # the reader (`head -1`) is gone before the first byte is written
        try:
            result = subprocess.run(
                [sys.executable, "-m", "precompute", "inspect", str(small_store), *extra],
                stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
            )  # fmt: skip
        finally:
            os.close(write)
        assert result.stderr == "" and result.returncode == 1, result.stderr
