"""The consoles every `servestack` command prints to: tables on stdout, errors on stderr."""

from __future__ import annotations

import sys

from rich.console import Console

# Logs (CI, `make run | tee`) are not terminals; rich would fold their tables to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
# No emoji codes: a config key in a message (`servestack:cloud:`) must not turn into a picture.
errors = Console(stderr=True, soft_wrap=True, emoji=False)
