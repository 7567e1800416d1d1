from __future__ import annotations

import pytest
from _ddp_smoke import TINY, tiny_vocab
from transformers import BertForMaskedLM

import geneattn.models._builtin as builtin
from geneattn import InputError
from geneattn.models import builtin_checkpoint, load, make_config, save_model


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """A checkpoints directory holding a tiny, complete ``mini-nutlin``."""
    d = tmp_path / "mini-nutlin"
    config = make_config("mini", vocab_size=60, max_position_embeddings=32)
    for k, v in TINY.items():
        setattr(config, k, v)
    save_model(BertForMaskedLM(config), d)
    tiny_vocab().to_json(d / "vocab.json")
    monkeypatch.setattr(builtin, "_root", lambda: tmp_path)
    return d


def test_complete_checkpoint_loads(fake_root):
    path = builtin_checkpoint()
    assert path == fake_root
    assert type(load(path, vocab=tiny_vocab())).__name__ == "BertForMaskedLM"


@pytest.mark.parametrize(
    "damage", ["truncate", "missing_vocab", "missing_weights", "bad_config", "other_vocab"]
)
def test_damaged_checkpoint_is_one_clear_error(fake_root, damage):
    w = fake_root / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "missing_vocab":
        (fake_root / "vocab.json").unlink()
    elif damage == "missing_weights":
        w.unlink()
    elif damage == "bad_config":
        (fake_root / "config.json").write_text("{not json")
    else:
        tiny_vocab(50).to_json(fake_root / "vocab.json")
    with pytest.raises(InputError, match="built-in checkpoint 'mini-nutlin' is unusable") as e:
        builtin_checkpoint("mini-nutlin")
    assert "RECIPE.md" in str(e.value) and "\n" not in str(e.value)


def test_unknown_name():
    with pytest.raises(InputError, match="unknown built-in checkpoint"):
        builtin_checkpoint("huge")


def test_shipped_checkpoint_is_complete():
    """The package's own checkpoint: files present, readable, vocabulary matching the model."""
    root = builtin._root() / builtin.DEFAULT_CHECKPOINT
    if not root.is_dir():
        pytest.skip("no shipped checkpoint in this checkout")
    path = builtin_checkpoint()
    assert {"config.json", "model.safetensors", "vocab.json", "RECIPE.md", "train_log.json"} <= {
        p.name for p in path.iterdir()
    }
    assert (path / "model.safetensors").stat().st_size < 10 * 2**20  # a few MB of package data
