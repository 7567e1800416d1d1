"""Fixtures of tests/stats (builders in `_stats_synth`)."""

from __future__ import annotations

import pytest

from _stats_synth import make_counts, make_store


@pytest.fixture(scope="session")
def counts_adata():
    return make_counts()


@pytest.fixture(scope="session")
def store_and_planted():
    return make_store()
