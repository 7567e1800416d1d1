"""A small engine for cached stages: run, skip what is done, resume what was interrupted.

Each `Stage` has a name, upstream stages, parameters and output paths (relative to the results
directory). Its **hash** covers its name, its parameters and its upstream stages' hashes, so
changing a parameter re-runs that stage and everything downstream of it and nothing else.
``manifest.json`` records per stage: ``name, hash, params_hash, params, upstream {name: hash},
outputs, status ("running" | "done" | "failed"), seconds, summary, finished``. A stage is marked
``done`` only after it returned and all its outputs exist; stage outputs are written atomically
(``geneattn._atomic``), and leftover ``.tmp-*`` siblings of a killed run are removed at start, so
a run killed at any point resumes without loss.

The engine knows nothing about the study: ``geneattn.study`` declares the study's stages (each with
the config fields it reads, from which its parameters and hash are derived) and runs them here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._atomic import clean_tmp, write_json
from ._settings import settings

__all__ = ["Stage", "Context", "run_stages", "read_manifest", "stage_hash", "hashes", "order", "MANIFEST"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclasses.dataclass
class Context:
    """What a stage function receives: the results directory, the resolved config, shared state."""

    out: Path
    config: object = None

    def path(self, rel: str) -> Path:
        """``out / rel``."""
        return self.out / rel


@dataclasses.dataclass
class Stage:
    """One cached step.

    Attributes
    ----------
    name
        Unique stage name.
    run
        ``run(ctx) -> str | None``: does the work, writes ``outputs`` (atomically), returns a one-line summary.
    deps
        Names of upstream stages.
    params
        JSON-serialisable parameters that determine the outputs (hashed).
    outputs
        Paths relative to the results directory that must exist when the stage is done.
    """

    name: str
    run: Callable[[Context], str | None]
    deps: Sequence[str] = ()
    params: Mapping[str, object] = dataclasses.field(default_factory=dict)
    outputs: Sequence[str] = ()


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_hash(name: str, params: Mapping[str, object], upstream: Mapping[str, str]) -> str:
    """sha256 (16 hex digits) of the stage name, its parameters and its upstream hashes."""
    return hashlib.sha256(
        _canon({"name": name, "params": params, "upstream": upstream}).encode()
    ).hexdigest()[:16]


def read_manifest(out: str | Path) -> dict[str, object]:
    """The manifest of a results directory (an empty one when absent or unreadable)."""
    p = Path(out) / MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable; every stage will run again", p)
        m = {}
    if not isinstance(m, dict) or not isinstance(m.get("stages"), dict):
        m = {"version": MANIFEST_VERSION, "stages": {}}
    return m


def order(stages: Sequence[Stage], *, given: Sequence[str] = ()) -> list[Stage]:
    """``stages`` in dependency order (upstream first; otherwise in the given order).

    ``given`` names stages outside ``stages`` that are done already (``run_stages(given=)``).
    """
    by_name = {s.name: s for s in stages}
    if len(by_name) != len(stages):
        msg = "stage names must be unique"
        raise ValueError(msg)
    done: list[Stage] = []
    seen: set[str] = set()

    def visit(s: Stage, path: tuple[str, ...]) -> None:
        if s.name in seen:
            return
        if s.name in path:
            msg = f"stage cycle: {' -> '.join((*path, s.name))}"
            raise ValueError(msg)
        for d in s.deps:
            if d in given and d not in by_name:
                continue
            if d not in by_name:
                msg = f"stage {s.name!r} depends on unknown stage {d!r}"
                raise ValueError(msg)
            visit(by_name[d], (*path, s.name))
        seen.add(s.name)
        done.append(s)

    for s in stages:
        visit(s, ())
    return done


def _is_done(entry: Mapping[str, object] | None, h: str, out: Path, stage: Stage) -> bool:
    return bool(
        entry
        and entry.get("status") == "done"
        and entry.get("hash") == h
        and all((out / o).exists() for o in stage.outputs)
    )


def run_stages(
    stages: Sequence[Stage],
    out: str | Path,
    *,
    ctx: Context | None = None,
    force: bool | Sequence[str] = False,
    progress: bool | None = None,
    on_done: Callable[[str, float, bool], None] | None = None,
    given: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Run ``stages`` in dependency order into ``out``, skipping those already done with the same hash.

    Parameters
    ----------
    stages
        The stages (any order; ``deps`` decide).
    out
        Results directory (created; ``manifest.json`` lives there).
    ctx
        Context handed to every stage (default: a new one for ``out``).
    force
        ``True`` re-runs every stage; a list of names re-runs those stages only (their downstream
        stages keep their cache, since their hashes do not change).
    progress
        Show a rich progress bar (default ``settings.progress``).
    on_done
        Called after every stage with ``(name, seconds, cached)``.
    given
        Hashes of done stages outside ``stages`` that some of them depend on (running part of a
        study: its keys are then the same as when the whole study runs).

    Returns
    -------
    The manifest (also written to ``out/manifest.json`` after every stage).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_tmp = clean_tmp(out)
    if n_tmp:
        logger.info("removed %d leftover temporary file(s) of an interrupted run", n_tmp)
    ctx = ctx or Context(out)
    manifest = read_manifest(out)
    manifest.update(version=MANIFEST_VERSION)
    entries: dict[str, object] = manifest["stages"]
    ordered = order(stages, given=tuple(given or ()))
    manifest["order"] = _merged_order(manifest.get("order") or [], [s.name for s in ordered])
    done: dict[str, str] = dict(given or {})
    forced = set(s.name for s in ordered) if force is True else set(force or ())
    show = settings.progress if progress is None else progress
    with _progress(show, len(ordered)) as bar:
        for stage in ordered:
            upstream = {d: done[d] for d in stage.deps}
            h = stage_hash(stage.name, stage.params, upstream)
            done[stage.name] = h
            bar.describe(stage.name)
            if stage.name not in forced and _is_done(entries.get(stage.name), h, out, stage):
                logger.info("%-9s cached (%s)", stage.name, entries[stage.name].get("summary") or "done")
                bar.advance()
                if on_done is not None:
                    on_done(stage.name, 0.0, True)
                continue
            entries[stage.name] = _entry(stage, h, upstream, status="running")
            write_json(out / MANIFEST, manifest)
            t0 = time.perf_counter()
            try:
                summary = stage.run(ctx)
            except BaseException as e:
                entries[stage.name].update(status="failed", error=f"{type(e).__name__}: {e}"[:500],
                                           seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
                write_json(out / MANIFEST, manifest)
                raise
            missing = [o for o in stage.outputs if not (out / o).exists()]
            if missing:
                msg = f"stage {stage.name!r} finished without writing {missing}"
                raise RuntimeError(msg)
            secs = round(time.perf_counter() - t0, 3)
            entries[stage.name].update(status="done", seconds=secs, summary=summary or "",
                                       finished=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))  # fmt: skip
            write_json(out / MANIFEST, manifest)
            logger.info("%-9s done in %.1fs: %s", stage.name, secs, summary or "")
            bar.advance()
            if on_done is not None:
                on_done(stage.name, secs, False)
    write_json(out / MANIFEST, manifest)
    return manifest


def _merged_order(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """The run order to record: ``new`` when it covers ``old`` (a whole run), else ``old`` extended."""
    return list(new) if set(new) >= set(old) else [*old, *(n for n in new if n not in old)]


def hashes(stages: Sequence[Stage]) -> dict[str, str]:
    """Every stage's hash, as `run_stages` computes it (name -> hash, in run order)."""
    out: dict[str, str] = {}
    for s in order(stages):
        out[s.name] = stage_hash(s.name, s.params, {d: out[d] for d in s.deps})
    return out


def _entry(stage: Stage, h: str, upstream: dict[str, str], *, status: str) -> dict[str, object]:
    params = json.loads(_canon(dict(stage.params)))
    return {
        "name": stage.name,
        "hash": h,
        "params_hash": hashlib.sha256(_canon(params).encode()).hexdigest()[:16],
        "params": params,
        "upstream": upstream,
        "outputs": list(stage.outputs),
        "status": status,
        "seconds": None,
        "summary": "",
    }


class _progress:
    """A rich progress bar over stages (no-op when disabled)."""

    def __init__(self, show: bool, total: int) -> None:  # noqa: FBT001
        self.show, self.total, self._p, self._task = show, total, None, None

    def __enter__(self) -> _progress:
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("[bold]stage[/] {task.description:<10}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), transient=False)  # fmt: skip
            self._p.__enter__()
            self._task = self._p.add_task("", total=self.total)
        return self

    def describe(self, name: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=name)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
