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


def test_training_epochs_follow_the_dataset_recipe_unless_set():
    assert (StudyConfig().resolved().pretrain_epochs, StudyConfig().resolved().finetune_epochs) == (1, 4)
    p = StudyConfig(dataset="pbmc68k").resolved()
    recipe = (p.pretrain_epochs, p.finetune_epochs, p.pooling, p.finetune_lr, p.finetune_head_lr)
    assert recipe == (40, 25, "mean", 3e-4, 3e-3)
    assert (
        StudyConfig(dataset="pbmc68k", model=".", dictionaries=".").resolved().pooling == "auto"
    )  # not with --model
    assert StudyConfig().resolved().pooling == "auto"
    assert StudyConfig(dataset="pbmc68k", finetune_epochs=2).resolved().finetune_epochs == 2
    assert merge({"dataset": "pbmc68k"}, {"quick": True}).resolved().pretrain_epochs == 1  # a quick look
    with pytest.raises(InputError, match="finetune_epochs must be >= 1"):
        StudyConfig(finetune_epochs=0)
    with pytest.raises(InputError, match="pooling must be one of"):
        StudyConfig(pooling="max")
    with pytest.raises(InputError, match="finetune_head_lr must be a finite number"):
        StudyConfig(finetune_head_lr=float("nan"))


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
