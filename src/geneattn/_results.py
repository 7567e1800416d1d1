"""`Results`: the one object that knows the layout of a results directory.

Every path of a ``geneattn run`` results directory, the names of the two compared models, and the
writers of its tables, AnnData and ``metrics.json`` live here; nothing else spells a results path.
Tables are Parquet files that carry their parameters in ``DataFrame.attrs["params"]`` (stored in
the file's schema metadata by pandas), so every table says how it was made.

Layout (design.md, "Results directory")::

    config.toml  manifest.json  metrics.json  report.html  cells.h5ad  plan.json
    data/study.h5ad  data/corpus.h5ad       the study's cells; the pretraining corpus
    data/qc.h5ad                            after QC/UMAP/DE (cells.h5ad: + the statistics' annotations)
    tokens/  corpus_tokens/                 tokenized cells (HF datasets) + vocab.json
    models/pretrained/  models/finetuned/   HuggingFace model directories (+ models/pretrained.json),
                                            with metrics.json, splits.parquet, train_log.json
    runs/<name>/  runs/runs.json            control fine-tunes and their index
    runs/attention/                         every run's attention on the held-out cells
    attention/                              attention tables, params.json, per-token log-fold stores
    tables/<name>.parquet                   every other table
    figures/<name>.png|svg
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._atomic import atomic_path, write_json
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

__all__ = ["Results", "REF", "OTHER", "MissingResult", "jsonable"]

#: the reference (pretrained) and the compared (fine-tuned) model of a study
REF, OTHER = "pretrained", "finetuned"


class MissingResult(InputError):
    """A table, store or file that a results directory does not (yet) hold."""


def jsonable(obj: object) -> object:
    """``obj`` with numpy scalars as Python numbers and non-finite floats as ``None`` (JSON ``null``)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    return str(obj)


@dataclasses.dataclass(frozen=True)
class Results:
    """Paths and writers of one results directory.

    Parameters
    ----------
    root
        The results directory (need not exist yet).
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    # ------------------------------------------------------------------ files
    @property
    def config(self) -> Path:
        """``config.toml``: the resolved configuration."""
        return self.root / "config.toml"

    @property
    def manifest(self) -> Path:
        """``manifest.json``: stages, their parameter hashes and timings."""
        return self.root / "manifest.json"

    @property
    def metrics(self) -> Path:
        """``metrics.json``: every number the report quotes."""
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        """``report.html``."""
        return self.root / "report.html"

    @property
    def cells(self) -> Path:
        """``cells.h5ad``: the study's AnnData with QC, UMAP, DE and per-gene attention (the stats stage writes it)."""
        return self.root / "cells.h5ad"

    @property
    def qc_h5ad(self) -> Path:
        """``data/qc.h5ad``: the study's cells after QC, UMAP and DE (the qc stage's output).

        ``cells.h5ad`` is this plus the statistics' annotations, written once by the stats stage.
        """
        return self.root / "data" / "qc.h5ad"

    @property
    def study_h5ad(self) -> Path:
        """``data/study.h5ad``: the study's cells as loaded (canonical AnnData)."""
        return self.root / "data" / "study.h5ad"

    @property
    def corpus_h5ad(self) -> Path:
        """``data/corpus.h5ad``: the pretraining corpus (absent when no model is pretrained here)."""
        return self.root / "data" / "corpus.h5ad"

    @property
    def tokens(self) -> Path:
        """``tokens/``: the study's tokenized cells (HF datasets) and ``vocab.json``."""
        return self.root / "tokens"

    @property
    def corpus_tokens(self) -> Path:
        """``corpus_tokens/``: the tokenized pretraining corpus."""
        return self.root / "corpus_tokens"

    @property
    def attention(self) -> Path:
        """``attention/``: attention tables and per-token log-fold stores."""
        return self.root / "attention"

    @property
    def tables(self) -> Path:
        """``tables/``."""
        return self.root / "tables"

    @property
    def figures(self) -> Path:
        """``figures/``."""
        return self.root / "figures"

    @property
    def plan(self) -> Path:
        """``plan.json``: the plan stage's estimate of every heavy stage."""
        return self.root / "plan.json"

    @property
    def attention_params(self) -> Path:
        """``attention/params.json``: how the attention tables were extracted."""
        return self.attention / "params.json"

    def model(self, name: str) -> Path:
        """``models/<name>/`` (a HuggingFace model directory)."""
        return self.root / "models" / name

    def model_record(self, name: str) -> Path:
        """``models/<name>.json``: where a model came from (a user checkpoint, the shipped one, ...)."""
        return self.root / "models" / f"{name}.json"

    def model_metrics(self, name: str) -> Path:
        """``models/<name>/metrics.json``: a fine-tuned model's test metrics."""
        return self.model(name) / "metrics.json"

    def model_splits(self, name: str) -> Path:
        """``models/<name>/splits.parquet``: its train / validation / test split of the cells."""
        return self.model(name) / "splits.parquet"

    @staticmethod
    def train_log(model_dir: Path) -> Path:
        """``<model_dir>/train_log.json``: a trained model's log (its directory may lie outside)."""
        return Path(model_dir) / "train_log.json"

    @property
    def runs(self) -> Path:
        """``runs/``: the control fine-tunes of the run-level null and their attention."""
        return self.root / "runs"

    def run(self, name: str) -> Path:
        """``runs/<name>/``: one control fine-tune (a HuggingFace model directory + metrics)."""
        return self.runs / name

    @property
    def runs_json(self) -> Path:
        """``runs/runs.json``: every control run, its kind, seed and accuracy."""
        return self.runs / "runs.json"

    @property
    def runs_attention(self) -> Path:
        """``runs/attention/``: the pretrained model and every run on the held-out cells."""
        return self.runs / "attention"

    def table_path(self, name: str) -> Path:
        """``tables/<name>.parquet``."""
        return self.tables / f"{name}.parquet"

    def figure(self, name: str, ext: str = "png") -> Path:
        """``figures/<name>.<ext>``."""
        return self.figures / f"{name}.{ext}"

    # ------------------------------------------------------------------ tables
    def write_table(self, name: str, df: pd.DataFrame, *, params: Mapping[str, object] | None = None) -> Path:
        """Write ``tables/<name>.parquet`` atomically, with ``params`` stored beside the data."""
        out = df.copy(deep=False)
        out.attrs = {"params": jsonable(dict(params or {}))}
        path = self.table_path(name)
        with atomic_path(path) as tmp:
            out.to_parquet(tmp, index=False)
        return path

    def link_table(self, source: Path, name: str) -> Path:
        """Make ``tables/<name>.parquet`` the same file as ``source`` (a hard link, else a copy), atomically."""
        path = self.table_path(name)
        with atomic_path(path) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        return path

    def has_table(self, name: str) -> bool:
        """Whether ``tables/<name>.parquet`` or ``attention/<name>.parquet`` exists."""
        return self.table_path(name).is_file() or (self.attention / f"{name}.parquet").is_file()

    def read_table(self, name: str, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``tables/<name>.parquet`` (else ``attention/<name>.parquet``); its parameters in ``.attrs``.

        ``columns`` reads only those of them the table has (a large table's memory). Raises
        `MissingResult` when neither file exists.
        """
        for p in (self.table_path(name), self.attention / f"{name}.parquet"):  # exact names: no temp file
            if p.is_file():
                if columns is None:
                    return pd.read_parquet(p)
                import pyarrow.parquet as pq

                have = set(pq.read_schema(p).names)
                return pd.read_parquet(p, columns=[c for c in columns if c in have])
        msg = f"no table {name!r} in {self.root} (run `geneattn run`, or the stage that writes it, first)"
        raise MissingResult(msg)

    # ------------------------------------------------------------------ AnnData and JSON
    @staticmethod
    def write_h5ad(path: Path, adata: AnnData) -> Path:
        """Write ``adata`` to ``path`` atomically (a full disk is one clear `OutputError`)."""
        from .io import write_h5ad

        return write_h5ad(path, adata)

    def read_cells(self, *, backed: bool = False) -> AnnData:
        """``cells.h5ad`` (in memory, or backed read-only)."""
        import anndata as ad

        if not self.cells.is_file():
            msg = f"{self.root} is not a results directory (cells.h5ad missing); run the earlier stages first"
            raise MissingResult(msg)
        return ad.read_h5ad(self.cells, backed="r" if backed else None)

    def read_qc(self, *, backed: bool = False) -> AnnData:
        """``data/qc.h5ad`` (in memory, or backed read-only)."""
        import anndata as ad

        if not self.qc_h5ad.is_file():
            msg = f"{self.qc_h5ad} missing; run the qc stage first (`geneattn run`)"
            raise MissingResult(msg)
        return ad.read_h5ad(self.qc_h5ad, backed="r" if backed else None)

    def read_study(self) -> AnnData:
        """``data/study.h5ad`` (the study's cells as loaded; backed read-only)."""
        import anndata as ad

        if not self.study_h5ad.is_file():
            msg = f"{self.study_h5ad} missing; run the data stage first"
            raise MissingResult(msg)
        return ad.read_h5ad(self.study_h5ad, backed="r")

    def read_json(self, path: Path) -> dict:
        """A JSON file of this directory; `MissingResult` if absent, `InputError` if unreadable."""
        if not path.is_file():
            msg = f"{path} not found"
            raise MissingResult(msg)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            msg = f"{path} is unreadable ({type(e).__name__}: {e}); re-run the stage that writes it"
            raise InputError(msg) from None
        if not isinstance(value, dict):
            msg = f"{path} does not hold a JSON object"
            raise InputError(msg)
        return value

    def read_json_or_empty(self, path: Path) -> dict:
        """`read_json`, or an empty dict when the file does not exist (yet)."""
        return self.read_json(path) if path.is_file() else {}

    def read_metrics(self) -> dict:
        """``metrics.json`` (an empty dict when it does not exist yet)."""
        return self.read_json_or_empty(self.metrics)

    def write_metrics(self, metrics: Mapping[str, object]) -> Path:
        """Write ``metrics.json`` atomically (NaN and infinities become ``null``): its only writer."""
        return write_json(self.metrics, jsonable(dict(metrics)))

    def update_metrics(self, **sections: object) -> Path:
        """Replace top-level sections of ``metrics.json`` (read, modify, write atomically)."""
        metrics = self.read_metrics()
        metrics.update(sections)
        return self.write_metrics(metrics)
