"""Import every command module so that each registers its commands on `app` (in stage order)."""

from __future__ import annotations

import importlib

for _name in ("_data", "_tokenize", "_models", "_attention", "_stats", "_run"):
    importlib.import_module(f"{__package__}.{_name}")
