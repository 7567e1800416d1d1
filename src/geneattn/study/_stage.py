"""Declaring the study's stages: each names the config fields it reads, beside its code.

``@stage("finetune", deps=("tokenize", "pretrain"), reads=("finetune_lr", ...), outputs=(...))``
registers a stage function. Its cache parameters are derived from the fields it reads (input paths
by their content signature, not their name), and the function receives a `ConfigView` that raises
`UndeclaredRead` on any other field. A stage therefore cannot depend on a setting that its cache key
misses: the bug class where ``--finetune-lr`` silently reused an old model is impossible.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd

from .._results import Results
from .config import StudyConfig

__all__ = [
    "stage",
    "StageSpec",
    "StageContext",
    "ConfigView",
    "UndeclaredRead",
    "STAGES",
    "key_params",
    "ALL",
]

#: ``reads=ALL``: the stage reads the whole configuration (the report shows it)
ALL = ("*",)


class UndeclaredRead(AttributeError):
    """A stage read a config field that its ``reads=`` does not declare (a bug, never user input)."""


class ConfigView:
    """Read-only view of a `StudyConfig` limited to the fields a stage declares.

    Properties of `StudyConfig` (e.g. ``source``) are evaluated on the view, so their own reads are
    checked too.
    """

    __slots__ = ("_cfg", "_fields", "_stage")

    def __init__(self, cfg: StudyConfig, fields: Iterable[str], stage: str) -> None:
        object.__setattr__(self, "_cfg", cfg)
        names = {f.name for f in dataclasses.fields(StudyConfig)}
        object.__setattr__(self, "_fields", frozenset(names if tuple(fields) == ALL else fields))
        object.__setattr__(self, "_stage", stage)

    def __getattr__(self, name: str) -> object:
        if name in self._fields:
            return getattr(self._cfg, name)
        prop = getattr(StudyConfig, name, None)
        if isinstance(prop, property):
            return prop.fget(self)
        msg = f"stage {self._stage!r} reads config field {name!r} but does not declare it in reads="
        raise UndeclaredRead(msg)

    def __setattr__(self, name: str, value: object) -> None:
        msg = "the study configuration is read-only inside a stage"
        raise AttributeError(msg)

    def to_dict(self) -> dict[str, object]:
        """The declared fields and their values."""
        return {k: getattr(self._cfg, k) for k in sorted(self._fields)}


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a stage function receives: the results layout, its config view and its parameters."""

    results: Results
    config: ConfigView
    params: Mapping[str, object]
    stage: str

    def write_table(self, name: str, df: pd.DataFrame, **extra: object) -> Path:
        """Write ``tables/<name>.parquet`` with the stage's parameters (and ``extra``) beside it."""
        return self.results.write_table(name, df, params={"stage": self.stage, **self.params, **extra})


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A registered stage.

    Attributes
    ----------
    name, deps
        Stage name and upstream stage names.
    reads
        Config fields the stage reads (`ALL` for every field).
    outputs
        Paths relative to the results directory that exist when the stage is done, or a function of
        the stage's `ConfigView` returning them.
    run
        ``run(ctx) -> summary``.
    """

    name: str
    deps: tuple[str, ...]
    reads: tuple[str, ...]
    outputs: tuple[str, ...] | Callable[[ConfigView], Iterable[str]]
    run: Callable[[StageContext], str | None]

    def view(self, cfg: StudyConfig) -> ConfigView:
        """The config as this stage may see it."""
        return ConfigView(cfg, self.reads, self.name)

    def output_paths(self, cfg: StudyConfig) -> list[str]:
        """The outputs for ``cfg``."""
        out = self.outputs(self.view(cfg)) if callable(self.outputs) else self.outputs
        return list(out)


#: every stage, in registration (= study) order
STAGES: dict[str, StageSpec] = {}


def stage(
    name: str,
    *,
    deps: tuple[str, ...] = (),
    reads: tuple[str, ...] = (),
    outputs: tuple[str, ...] | Callable[[ConfigView], Iterable[str]] = (),
) -> Callable[[Callable[[StageContext], str | None]], Callable[[StageContext], str | None]]:
    """Register ``fn`` as the study stage ``name`` (see the module docstring)."""

    def register(fn: Callable[[StageContext], str | None]) -> Callable[[StageContext], str | None]:
        STAGES[name] = StageSpec(name, tuple(deps), tuple(reads), outputs, fn)
        return fn

    return register


# ------------------------------------------------------------------------------------ cache keys
def _file_sig(p: str) -> dict[str, object]:
    st = Path(p).stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _dir_sig(p: str) -> dict[str, object]:
    """A directory by the names, sizes and times of its files (one level: model and dictionary folders)."""
    root = Path(p)
    files = sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith("."))
    return {
        "path": str(p),
        "files": [[str(q.relative_to(root)), q.stat().st_size, q.stat().st_mtime_ns] for q in files],
    }


def _model_sig(p: str) -> dict[str, object]:
    cfg = Path(p) / "config.json"
    try:
        config = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else None
    except (OSError, ValueError):
        config = None
    return {**_dir_sig(p), "config": config}


def _checkpoint_sig(name: str) -> dict[str, object] | str:
    """A shipped checkpoint by the signature of its files (re-created weights re-key); else the name."""
    from ..models import BUILTIN, builtin_checkpoint

    return {"name": name, **_model_sig(str(builtin_checkpoint(name)))} if name in BUILTIN else name


_SIGNATURES: dict[str, Callable[[str], dict[str, object] | str]] = {
    "data": _file_sig,
    "model": _model_sig,
    "dictionaries": _dir_sig,
    "checkpoint": _checkpoint_sig,
}


def key_params(spec: StageSpec, cfg: StudyConfig) -> dict[str, object]:
    """The stage's cache parameters: each field it reads (input paths by content signature).

    The package version is part of every key: results of another geneattn version are recomputed.
    """
    from .. import __version__

    view = spec.view(cfg)
    params: dict[str, object] = {"geneattn": __version__}
    for name, value in view.to_dict().items():
        sig = _SIGNATURES.get(name)
        params[name] = sig(value) if sig is not None and value is not None else value
    return params
