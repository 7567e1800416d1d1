"""Untrusted files: crafted pickles never run, weights load without arbitrary unpickling, no unsafe
calls in the source tree, and user-provided strings (labels, gene names) are escaped in report.html.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from geneattn.cli import app
from geneattn.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "geneattn"
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class _Payload:
    """Pickles to ``os.system(cmd)``: unpickling it with a plain unpickler would run ``cmd``."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_cli_refuses_crafted_token_dictionary(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"<pad>": 0, "<mask>": 1, "G": _Payload(f"touch {sentinel}")}))
    med = tmp_path / "med.pkl"
    med.write_bytes(pickle.dumps({"G": 1.0}))
    h5ad = tmp_path / "in.h5ad"
    h5ad.write_bytes(b"not read: the dictionary is refused first")
    res = CliRunner().invoke(app, ["-q", "tokenize", str(h5ad), "--out", str(tmp_path / "out"),
                                   "--token-dictionary", str(evil), "--gene-median-dictionary", str(med)])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "refusing to load global 'posix.system'" in res.stderr or "refusing to load global" in res.stderr
    assert "Traceback" not in res.output
    assert not sentinel.exists()  # the payload did not run
    assert not (tmp_path / "out").exists()


def test_model_load_refuses_malicious_pytorch_bin(tmp_path):
    import torch
    from transformers import BertConfig

    from geneattn.models import load

    sentinel = tmp_path / "pwned"
    model = tmp_path / "model"
    model.mkdir()
    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8, max_position_embeddings=8).save_pretrained(model)  # fmt: skip
    torch.save(
        {"bert.embeddings.word_embeddings.weight": _Payload(f"touch {sentinel}")}, model / "pytorch_model.bin"
    )
    assert not sentinel.exists()
    with pytest.raises(InputError, match="cannot read model weights"):
        load(model)
    assert not sentinel.exists()  # weights_only=True refused the global before calling it
    # control: an unrestricted torch.load would have run the payload
    torch.load(model / "pytorch_model.bin", weights_only=False)
    assert sentinel.exists()


# unsafe call -> allowed "path:line-substring" exceptions (none today)
_UNSAFE = {
    r"(?<![\w.])eval\(": (),  # the builtin, not torch.nn.Module.eval()
    r"(?<![\w.])exec\(": (),
    r"shell\s*=\s*True": (),
    r"\bpickle\.loads?\(": (),
    r"\bUnpickler\(": ("tokenize/vocab.py",),  # the restricted unpickler itself
    r"\bmarshal\.loads?\(|\bshelve\.open\(|\byaml\.load\(|\bdill\.": (),
}


def _code_lines(path: Path):
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.split("#", 1)[0]
        if code.strip() and not code.strip().startswith(("``", '"""')):
            yield i, code


def test_no_unsafe_calls_in_source():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        for i, code in _code_lines(path):
            for pattern, allowed in _UNSAFE.items():
                if re.search(pattern, code) and rel not in allowed:
                    found.append(f"{rel}:{i}: {code.strip()}")
        # every torch.load call (possibly spanning lines) passes weights_only=True
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start() : text.find(")", m.end()) + 1]
            line = text.count("\n", 0, m.start()) + 1
            if "weights_only=True" not in call and "``" not in text[max(0, m.start() - 2) : m.start()]:
                found.append(f"{rel}:{line}: torch.load without weights_only=True")
        if "pickle.Unpickler" in text and rel != "tokenize/vocab.py":
            found.append(f"{rel}: subclasses pickle.Unpickler outside the restricted unpickler")
    assert not found, "\n".join(found)


def test_source_scan_catches_unsafe_code(tmp_path, monkeypatch):
    """The scanner itself works: a planted unsafe file is reported."""
    pkg = tmp_path / "geneattn"
    pkg.mkdir()
    (pkg / "bad.py").write_text("import torch\nx = torch.load(p,\n  map_location='cpu')\ny = eval('1')\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    with pytest.raises(AssertionError, match=r"bad.py:2: torch.load without weights_only=True"):
        test_no_unsafe_calls_in_source()


def test_report_escapes_gene_names_and_labels(tmp_path):
    from geneattn import report

    top = pd.DataFrame({"model": ["finetuned"] * 2, "rank": [1, 2], "gene": [EVIL, "MDM2"],
                        "fold_mean": [2.0, 1.5], "n_cells": [10, 10]})  # fmt: skip
    from _synth_tables import report_metrics
    from geneattn.study import StudyConfig

    metrics = report_metrics(EVIL)
    metrics["attention"].update(
        top_genes_finetuned=[EVIL, "MDM2"],
        highlight_rank_finetuned={EVIL: 1},
        highlight_rank_pretrained={EVIL: 3},
    )
    metrics["highlight"] = [EVIL]
    metrics["skipped"].update(incremental="test", methods="test")
    config = {**StudyConfig().to_dict(), "highlight": [EVIL], "label_key": EVIL}
    path = report.build({}, {"top_genes": top}, tmp_path, metrics=metrics, config=config)
    html = path.read_text()
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the gene name is shown, escaped
    assert json.dumps(EVIL) not in html
