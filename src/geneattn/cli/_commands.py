"""Import every command module so that each registers its commands on `app`."""

from __future__ import annotations

import importlib

# one module per stage; each owns its commands (keeps parallel work on the CLI conflict-free)
for _name in ("_data", "_tokenize", "_models", "_attention", "_stats", "_run"):
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as e:  # a stage not built yet
        if e.name != f"{__package__}.{_name}":
            raise
