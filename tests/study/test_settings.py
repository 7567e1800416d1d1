"""One place per setting: every `StudyConfig` field's flag, TOML type check and help come from its
`setting` metadata."""

from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner

from geneattn.cli import app
from geneattn.errors import InputError
from geneattn.study import StudyConfig
from geneattn.study.config import field_types

FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}


@pytest.fixture
def captured(monkeypatch):
    """`geneattn run` with `run_study` replaced: the config it would run."""
    import geneattn.study

    seen = {}

    def fake(cfg, **kw):
        seen["cfg"] = cfg
        return {"stages": {}}

    monkeypatch.setattr(geneattn.study, "run_study", fake)
    return seen


def test_every_field_has_a_flag_and_help():
    r = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    flags = set(re.findall(r"--([a-z0-9-]+)", r.output))
    text = re.sub(r"\s+", " ", r.output.replace("│", " "))
    for name, f in FIELDS.items():
        assert name.replace("_", "-") in flags, name
        assert f.metadata["help"].split(" (")[0][:30] in text, name
    assert {"config", "force", "no-quick", "no-permute-labels"} <= flags


@pytest.mark.parametrize("name", [n for n, (t, _) in field_types().items() if t == (int,)])
def test_each_int_flag_reaches_the_config(name, captured, tmp_path):
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "o"), f"--{name.replace('_', '-')}", "12"])
    assert r.exit_code == 0, r.output
    assert getattr(captured["cfg"], name) == 12


def test_new_flags_lists_paths_and_bools(captured, tmp_path):
    args = ["run", "-o", str(tmp_path / "o"), "--model-input-size", "64", "--rank-bin", "10", "--ablation-top-k", "0",
            "--classes", "a, b", "--highlight", "X,Y", "--finetune-lr", "0.01", "--quick", "--no-permute-labels"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    c = captured["cfg"]
    assert (c.model_input_size, c.rank_bin, c.ablation_top_k) == (64, 10, 0)
    assert c.classes == ["a", "b"] and c.highlight == ["X", "Y"] and c.finetune_lr == 0.01
    assert c.quick is True and c.permute_labels is False and c.out == str(tmp_path / "o")


def test_toml_types_come_from_the_annotations():
    assert field_types()["finetune_lr"] == ((float, int), True)
    assert field_types()["rank_bin"] == ((int,), False)
    for name, ((t, *_), optional) in field_types().items():
        wrong = 1.5 if t is not float else "x"
        with pytest.raises(InputError, match=f"{name} must be"):
            StudyConfig(**{name: wrong})
        if not optional:
            with pytest.raises(InputError, match=f"{name} must be"):
                StudyConfig(**{name: None})
