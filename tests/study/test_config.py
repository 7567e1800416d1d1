"""`StudyConfig`: validation, TOML round trip, precedence CLI > file > default."""

from __future__ import annotations

import tomllib

import pytest

from geneattn import InputError
from geneattn.study.config import NUTLIN_CLASSES, StudyConfig, dump_toml, load_toml, merge


def test_defaults_and_resolved():
    c = StudyConfig().resolved()
    assert c.classes == list(NUTLIN_CLASSES) and c.groups == "low=0.1,0.5;high=5,10"
    p = StudyConfig(dataset="pbmc68k").resolved()
    assert p.classes is None and p.groups is None


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"bogus": 1}, "unknown key"),
        ({"seed": "1"}, "seed must be int"),
        ({"seed": True}, "seed must be int"),
        ({"classes": "0.1,0.5"}, "classes must be list"),
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"model": "/x"}, "go together"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid(kw, match):
    with pytest.raises(InputError, match=match):
        StudyConfig.from_dict(kw)


def test_toml_round_trip_and_precedence(tmp_path):
    c = StudyConfig(classes=[0.1, 10.0], highlight=["MDM2", 'we"ird\\'], groups="a=0.1;b=10").resolved()
    assert c.classes == ["0.1", "10"]
    text = dump_toml(c.to_dict(), header="resolved")
    assert tomllib.loads(text) == {k: v for k, v in c.to_dict().items() if v is not None}
    p = tmp_path / "study.toml"
    p.write_text(text)
    assert StudyConfig.from_dict(load_toml(p)) == c
    m = merge(load_toml(p), {"seed": 7, "out": None})
    assert m.seed == 7 and m.out == c.out and m.classes == ["0.1", "10"]
    p.write_text("[study]\nseed = 3\n")
    assert merge(load_toml(p), {}).seed == 3
    p.write_text("seed = = 3")
    with pytest.raises(InputError, match="not valid TOML"):
        load_toml(p)
    with pytest.raises(InputError, match="not found"):
        load_toml(tmp_path / "missing.toml")
