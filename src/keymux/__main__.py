"""``python -m keymux``: the standalone check (or any ``keymux`` subcommand)."""

from __future__ import annotations

import sys

from .cli import module_main

sys.exit(module_main())
