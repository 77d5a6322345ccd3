"""`python -m pure_explorer ...`: the same as the `pure-explorer` command."""

import sys

from pure_explorer.cli import main

sys.exit(main())
