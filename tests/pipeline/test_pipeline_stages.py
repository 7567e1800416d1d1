"""Caching, manifest and resume machinery of `geneattn.pipeline` with cheap fake stages."""

from __future__ import annotations

import json

import pytest

from geneattn._atomic import write_text
from geneattn.pipeline import Context, Stage, read_manifest, run_stages


class Boom(RuntimeError):
    pass


def make(calls: list[str], params: dict | None = None, fail: set[str] = frozenset()) -> list[Stage]:
    params = params or {}

    def fn(name: str, src: str | None):
        def run(ctx: Context) -> str:
            calls.append(name)
            if name in fail:
                raise Boom(name)
            text = (ctx.path(src).read_text() if src else "") + f"{name}{params.get(name, '')};"
            write_text(ctx.path(f"{name}.txt"), text)
            return f"wrote {name}.txt"

        return run

    return [
        Stage("a", fn("a", None), (), {"p": params.get("a")}, ["a.txt"]),
        Stage("b", fn("b", "a.txt"), ("a",), {"p": params.get("b")}, ["b.txt"]),
        Stage("c", fn("c", "a.txt"), ("a",), {"p": params.get("c")}, ["c.txt"]),
        Stage("d", fn("d", "b.txt"), ("b", "c"), {"p": params.get("d")}, ["d.txt"]),
    ]


def test_runs_in_order_then_skips(tmp_path):
    calls: list[str] = []
    m = run_stages(make(calls)[::-1], tmp_path, progress=False)
    assert calls == ["a", "b", "c", "d"]
    assert (tmp_path / "d.txt").read_text() == "a;b;d;"
    st = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert st == m["stages"]
    for name in "abcd":
        e = st[name]
        assert e["status"] == "done" and e["outputs"] == [f"{name}.txt"] and e["seconds"] >= 0
        assert {"hash", "params_hash", "upstream", "summary", "params"} <= set(e)
    assert st["d"]["upstream"] == {"b": st["b"]["hash"], "c": st["c"]["hash"]}
    calls.clear()
    run_stages(make(calls), tmp_path, progress=False)
    assert calls == []


def test_changed_parameter_reruns_only_dependents(tmp_path):
    calls: list[str] = []
    run_stages(make(calls), tmp_path, progress=False)
    calls.clear()
    run_stages(make(calls, {"c": "X"}), tmp_path, progress=False)
    assert calls == ["c", "d"]
    calls.clear()
    run_stages(make(calls, {"c": "X"}), tmp_path, force=True, progress=False)
    assert calls == ["a", "b", "c", "d"]


def test_failure_resumes_without_loss(tmp_path):
    calls: list[str] = []
    with pytest.raises(Boom):
        run_stages(make(calls, fail={"c"}), tmp_path, progress=False)
    st = read_manifest(tmp_path)["stages"]
    assert st["a"]["status"] == "done" and st["b"]["status"] == "done"
    assert st["c"]["status"] == "failed" and "Boom" in st["c"]["error"]
    assert "d" not in st
    # a killed run leaves temporary siblings: cleaned at start
    (tmp_path / ".tmp-d.txt").write_text("half")
    (tmp_path / ".tmp-dir-x").mkdir()
    calls.clear()
    run_stages(make(calls), tmp_path, progress=False)
    assert calls == ["c", "d"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_missing_output_and_interrupted_stage_rerun(tmp_path):
    calls: list[str] = []
    run_stages(make(calls), tmp_path, progress=False)
    (tmp_path / "b.txt").unlink()
    m = read_manifest(tmp_path)
    m["stages"]["c"]["status"] = "running"  # killed while c ran
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    calls.clear()
    run_stages(make(calls), tmp_path, progress=False)
    assert calls == ["b", "c"]  # same hashes: d is still valid


def test_unreadable_manifest_and_bad_graph(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    calls: list[str] = []
    run_stages(make(calls), tmp_path, progress=False)
    assert calls == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_stages([Stage("x", lambda c: None, ("nope",))], tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="without writing"):
        run_stages([Stage("y", lambda c: None, (), {}, ["never.txt"])], tmp_path, progress=False)


def test_progress_bar_runs(tmp_path):
    calls: list[str] = []
    run_stages(make(calls), tmp_path, progress=True)
    assert calls == ["a", "b", "c", "d"]
