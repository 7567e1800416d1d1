"""parse_groups and dose-token normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geneattn.errors import InputError
from geneattn.io import normalize_dose, parse_groups


def test_parse_string_and_mapping():
    assert parse_groups("low=0.1,0.5;high=5,10") == {"low": ["0.1", "0.5"], "high": ["5", "10"]}
    assert parse_groups(" low = 0.1 , 0.5 ; high=5,10 ;") == {"low": ["0.1", "0.5"], "high": ["5", "10"]}
    assert parse_groups({"a": ["x"], "b": "y,z"}) == {"a": ["x"], "b": ["y", "z"]}


def test_classes_are_matched_numerically_and_returned_in_their_spelling():
    got = parse_groups("low=0.10,0.5;high=5.0,10", classes=["0.1", "0.5", "5", "10"])
    assert got == {"low": ["0.1", "0.5"], "high": ["5", "10"]}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty"),
        ("low:0.1,0.5", "bad group"),
        ("low=0.1=0.5", "bad group"),
        ("=0.1;high=5", "bad group name"),
        ("low=;high=5", "empty class"),
        ("low=0.1,,0.5", "empty class"),
        ("low=0.1;low=5", "defined twice"),
        ("low=0.1,5;high=5,10", "in groups 'low' and 'high'"),
        ("low=0.1,0.10", "twice in group"),
    ],
)
def test_bad_syntax(spec, match):
    with pytest.raises(InputError, match=match):
        parse_groups(spec)


def test_unknown_and_missing_classes():
    with pytest.raises(InputError, match="unknown class '7'"):
        parse_groups("low=0.1,7;high=5,10", classes=["0.1", "5", "10"])
    with pytest.raises(InputError, match=r"\['0.5'\] are in no group"):
        parse_groups("low=0.1;high=5,10", classes=["0.1", "0.5", "5", "10"])
    with pytest.raises(InputError, match="string or a mapping"):
        parse_groups(3)


@pytest.mark.parametrize(
    ("raw", "norm"), [("10.0", "10"), ("0.10", "0.1"), (0, "0"), ("1e-1", "0.1"), (" DMSO ", "DMSO")]
)
def test_normalize_dose(raw, norm):
    assert normalize_dose(raw) == norm


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=3))
def test_normalize_dose_is_spelling_invariant(mantissa, decimals):
    value = mantissa / 10**decimals
    assert normalize_dose(f"{value:.{decimals}f}") == normalize_dose(f"{value:.6f}") == normalize_dose(value)
