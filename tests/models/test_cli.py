from __future__ import annotations

import json

from typer.testing import CliRunner

from geneattn.cli import app


def test_cli_pretrain_then_finetune(tokens, vocab, tmp_path):
    tok = tmp_path / "tokens"
    tokens.save_to_disk(str(tok))
    vocab.to_json(tok / "vocab.json")
    runner = CliRunner()
    r = runner.invoke(
        app, ["pretrain", str(tok), "--out", str(tmp_path / "pt"), "--epochs", "1", "--batch-size", "32"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pt" / "model.safetensors").is_file()
    r = runner.invoke(
        app,
        [
            "finetune",
            str(tok),
            "--model",
            str(tmp_path / "pt"),
            "--out",
            str(tmp_path / "ft"),
            "--epochs",
            "1",
            "--groups",
            "ab=a,b;c=c",
            "--freeze-layers",
            "2",
            "--batch-size",
            "32",
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["groups"]["groups"] == {"ab": ["a", "b"], "c": ["c"]}


def test_cli_user_errors_exit_2(tokens, vocab, tmp_path):
    tok = tmp_path / "tokens"
    tokens.save_to_disk(str(tok))
    vocab.to_json(tok / "vocab.json")
    runner = CliRunner()
    r = runner.invoke(
        app, ["finetune", str(tok), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["pretrain", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["pretrain", str(tok), "--out", str(tmp_path / "o"), "--preset", "nope"])
    assert r.exit_code == 2 and "preset" in r.output
