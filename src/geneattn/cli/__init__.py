"""Command-line interface (typer); see ``geneattn --help``."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
