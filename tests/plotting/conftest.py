"""Fixtures for plot tests (synthetic tables: `tests/_synth_tables.py`)."""

from __future__ import annotations

import pytest

from _synth_tables import LABELS, synthetic_tables  # noqa: F401


@pytest.fixture(scope="session")
def tables_session():
    return synthetic_tables()


@pytest.fixture
def tables(tables_session):
    return {k: v.copy() for k, v in tables_session.items()}
