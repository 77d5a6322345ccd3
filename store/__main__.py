"""`python -m store [--write FILE]`: print the store section of docs/contracts.md (generated from
`store.schema`), or put it into FILE in place of the old one."""

from __future__ import annotations

import argparse
from pathlib import Path

from store.schema import render_markdown, replace_store_section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__)
    parser.add_argument("--write", metavar="FILE", help="the contracts file to update (docs/contracts.md)")
    args = parser.parse_args(argv)
    if args.write is None:
        print(render_markdown(), end="")
        return
    path = Path(args.write)
    path.write_text(replace_store_section(path.read_text()))


if __name__ == "__main__":
    main()
