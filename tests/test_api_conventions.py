"""The public API follows the scverse conventions (after scanpy's ``tests/test_package_structure.py``).

For every public function of every namespace: at most 3 positional parameters; ``adata`` first and
typed ``AnnData`` where it takes one; ``copy`` and ``key_added`` keyword-only, ``copy`` defaulting to
False and returning ``AnnData | None``; a docstring that names ``key_added`` outputs; no ``Any`` in the
signature; no positional booleans. And the package has no leftovers of its construction: no
ImportError fallbacks for its own modules.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import geneattn

SRC = Path(geneattn.__file__).parent
NAMESPACES = ["io", "datasets", "tokenize", "models", "attention", "stats", "stats.de", "stats.agreement",
              "stats.confounds", "stats.significance", "stats.attribution", "stats.nulls", "stats.per_class", "stats.baselines", "stats.incremental", "stats.adjust", "attention.ablation", "get", "tl", "pl", "plotting", "report", "study",
              "pipeline"]  # fmt: skip

#: signatures that may keep ``Any`` for now, with the reason
ANY_ALLOWED: dict[str, str] = {}


def _public_functions() -> list:
    out, seen = [], set()
    for ns in NAMESPACES:
        mod = importlib.import_module(f"geneattn.{ns}")
        for name in sorted(getattr(mod, "__all__", [])):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) and obj.__module__.startswith("geneattn") and obj not in seen:
                seen.add(obj)
                out.append(pytest.param(obj, f"{ns}.{name}", id=f"{ns}.{name}"))
    return out


FUNCTIONS = _public_functions()


def _positional(sig: inspect.Signature) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in sig.parameters.values() if p.kind in kinds]


def test_api_is_not_empty():
    assert len(FUNCTIONS) > 60


@pytest.mark.parametrize(("f", "qualname"), FUNCTIONS)
def test_signature_conventions(f, qualname):
    sig = inspect.signature(f)
    pos = _positional(sig)
    assert len(pos) <= 3, f"{qualname}: {len(pos)} positional parameters (at most 3)"
    params = sig.parameters
    if pos and pos[0].name == "adata":
        assert pos[0].annotation in ("AnnData", "AnnData | None"), f"{qualname}: adata must be typed AnnData"
    for name in ("copy", "key_added", "seed"):
        if name in params:
            assert params[name] not in pos, f"{qualname}: {name} must be keyword-only"
    if "copy" in params:
        assert params["copy"].default is False, qualname
        assert sig.return_annotation == "AnnData | None", f"{qualname}: copy=True returns AnnData | None"
    for p in pos:
        assert not (isinstance(p.default, bool)), f"{qualname}: positional boolean {p.name}"


@pytest.mark.parametrize(("f", "qualname"), FUNCTIONS)
def test_docstring_and_types(f, qualname):
    doc = inspect.getdoc(f) or ""
    assert doc.strip(), f"{qualname} has no docstring"
    if "key_added" in inspect.signature(f).parameters:
        assert "key_added" in doc, f"{qualname}: the docstring must say what key_added writes"
    if qualname in ANY_ALLOWED:
        return
    anns = [str(p.annotation) for p in inspect.signature(f).parameters.values()]
    anns.append(str(inspect.signature(f).return_annotation))
    assert not any(re.search(r"\bAny\b", a) for a in anns), (
        f"{qualname}: `Any` in a public signature ({anns})"
    )


def _import_fallbacks(path: Path) -> list[str]:
    """``try: from ..x import y except ImportError`` blocks that guard the package's own modules."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Try):
            continue
        catches = {getattr(h.type, "id", None) for h in node.handlers}
        own = any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(ast.Module(node.body, [])))
        if own and catches & {"ImportError", "ModuleNotFoundError"}:
            bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return bad


def test_no_import_fallbacks_for_own_modules():
    bad = [b for p in sorted(SRC.rglob("*.py")) for b in _import_fallbacks(p)]
    assert not bad, bad


#: the AnnData front door: every function takes ``adata`` first
FRONT_DOOR = ["tl", "pl", "get.gene_attention", "get.ranked_genes", "get.attention_change"]


def _front_door() -> list:
    out = []
    for name in FRONT_DOOR:
        mod_name, _, attr = name.partition(".")
        mod = importlib.import_module(f"geneattn.{mod_name}")
        names = [attr] if attr else mod.__all__
        out += [pytest.param(getattr(mod, n), f"{mod_name}.{n}", id=f"{mod_name}.{n}") for n in names]
    return out


@pytest.mark.parametrize(("f", "qualname"), _front_door())
def test_front_door_conventions(f, qualname):
    """tl/pl/get: AnnData first; tl writes under a keyword-only ``key_added`` with ``copy``; pl returns a Figure."""
    sig = inspect.signature(f)
    pos = _positional(sig)
    assert pos and pos[0].name == "adata" and pos[0].annotation == "AnnData", qualname
    assert len(pos) <= 3, qualname
    if qualname.startswith("tl.") and qualname != "tl.finetune":  # finetune writes a model directory
        for name in ("key_added", "copy"):
            assert name in sig.parameters and sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, (
                qualname
            )
    if qualname.startswith("pl."):
        assert sig.return_annotation == "Figure", f"{qualname} must return the Figure"
    if qualname.startswith("get."):
        assert sig.return_annotation == "pd.DataFrame", f"{qualname} returns a tidy DataFrame"


def test_front_door_is_lazy():
    """Importing geneattn, geneattn.tl and geneattn.pl runs nothing heavy (no torch, no matplotlib)."""
    import subprocess
    import sys

    code = "import sys, geneattn as ga; ga.tl; ga.pl; ga.get; print(sorted({'torch', 'matplotlib', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
