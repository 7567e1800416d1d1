"""`StudyConfig`: every setting of one study (`geneattn run`), with TOML reading and writing.

Precedence is CLI flag > config file > default (`merge`). The resolved config is written to
``results/config.toml``; ``geneattn run --config results/config.toml`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._keys import POOLINGS
from ..errors import InputError

__all__ = [
    "StudyConfig",
    "QUICK",
    "RECIPES",
    "DATASETS",
    "load_toml",
    "dump_toml",
    "merge",
    "NUTLIN_CLASSES",
    "NUTLIN_GROUPS",
]

DATASETS = ("nutlin-sim", "pbmc68k")
NUTLIN_CLASSES = ("0.1", "0.5", "5", "10")
NUTLIN_GROUPS = "low=0.1,0.5;high=5,10"
_DEVICES = ("auto", "cpu", "cuda", "mps")
#: largest study seed: numpy's legacy and sklearn seeds take 32 bits, and the control runs' seeds are the
#: study's plus offsets (``seed + 1000 i``, ``seed + 7919 i``), which must stay below 2**32
MAX_SEED = 2**31 - 1

# field -> accepted Python types (checked in __post_init__; TOML gives int for whole numbers)
_TYPES: dict[str, tuple[type, ...]] = {
    "dataset": (str,),
    "data": (str,),
    "layer": (str,),
    "perturbation": (str,),
    "label_key": (str,),
    "classes": (list,),
    "groups": (str,),
    "model": (str,),
    "dictionaries": (str,),
    "checkpoint": (str,),
    "finetuned": (str,),
    "seed": (int,),
    "out": (str,),
    "highlight": (list,),
    "preset": (str,),
    "cells_per_dose": (int,),
    "min_cells_per_class": (int,),
    "model_input_size": (int,),
    "pretrain_epochs": (int,),
    "finetune_epochs": (int,),
    "pooling": (str,),
    "finetune_lr": (float, int),
    "finetune_head_lr": (float, int),
    "batch_size": (int,),
    "attention_batch_size": (int,),
    "device": (str,),
    "top_k": (int,),
    "rank_bin": (int,),
    "n_boot": (int,),
    "attribution_cells": (int,),
    "n_seed_runs": (int,),
    "n_permuted_runs": (int,),
    "permute_labels": (bool,),
    "ablation_top_k": (int,),
    "quick": (bool,),
    "max_cells_per_class": (int,),
}
_OPTIONAL = {
    "max_cells_per_class",
    "data",
    "layer",
    "perturbation",
    "classes",
    "groups",
    "model",
    "dictionaries",
    "finetuned",
    "cells_per_dose",
    "finetune_lr",
    "finetune_head_lr",
    "pretrain_epochs",
    "finetune_epochs",
    "pooling",
}


@dataclasses.dataclass
class StudyConfig:
    """Settings of one study (every `geneattn run` flag has a field of the same name).

    Attributes
    ----------
    dataset
        Built-in dataset, ``"nutlin-sim"`` (simulated sci-Plex-2 nutlin-3a) or ``"pbmc68k"``; ignored
        when ``data`` is given.
    data
        An ``.h5ad`` file (canonical, scPerturb or Kaggle sci-Plex-2 layout) instead of a built-in dataset.
    layer
        ``data`` only: the layer holding raw counts (e.g. ``"counts"``) when ``X`` is normalised.
    perturbation
        sci-Plex drug to keep, e.g. ``"Nutlin"``.
    label_key
        obs column with the class to predict.
    classes
        Classes to keep, in order (nutlin-sim default: 0.1, 0.5, 5, 10).
    groups
        Coarse groups of classes, ``"low=0.1,0.5;high=5,10"`` (nutlin-sim default).
    model, dictionaries
        A real Geneformer checkpoint directory and the directory with its dictionaries (both or
        neither); they replace ``checkpoint``.
    checkpoint
        The pretrained model without ``model``: ``"auto"`` (the shipped ``mini-nutlin`` for the
        nutlin-sim study, else ``"pretrain"``), a shipped checkpoint's name (its vocabulary covers
        only the simulator's genes), or ``"pretrain"``: a ``preset`` model pretrained on the corpus.
    finetuned
        An already fine-tuned classifier of the pretrained model (``geneattn finetune``'s output, or a
        Geneformer-format ``BertForSequenceClassification`` directory): no fine-tuning here; it is
        evaluated on the study's test split when its labels are the study's classes, and the analyses
        that need control fine-tunes (the run-level null) are skipped.
    seed
        Seed of every stochastic step.
    out
        Results directory.
    highlight
        Genes highlighted in the figures and reported by rank (nutlin-3a's target MDM2).
    preset
        Model size pretrained when no ``model`` is given.
    cells_per_dose
        nutlin-sim only: cells per dose (default: the simulator's).
    min_cells_per_class
        Classes with fewer cells are an input error.
    model_input_size
        Maximum tokens per cell (Geneformer V1: 2048).
    pretrain_epochs, finetune_epochs
        Passes over the corpus and over the training cells; None: the dataset's recipe
        (`RECIPES`: 1 and 4, and 40 and 25 for ``pbmc68k``, whose 692 cells give 40 steps an epoch).
    pooling
        How the classifier summarises a cell: ``auto`` (the checkpoint's ``<cls>``, or the first
        gene of Geneformer V1 tokens), ``cls``, ``first`` or ``mean`` (masked mean of the last
        hidden states); None: the dataset's recipe (``auto``; ``mean`` for ``pbmc68k``).
    batch_size
        Cells per training step.
    finetune_lr
        Fine-tuning learning rate; default 1e-3 for a mini model pretrained here (a small model
        needs it: at 1e-4 it does not learn within a few epochs) and Geneformer's 5e-5 with ``--model``.
    finetune_head_lr
        Learning rate of the new pooler and classification head; None: the dataset's recipe (1e-3;
        3e-3 for ``pbmc68k``, whose encoder rate is then 3e-4).
    attention_batch_size
        Cells per forward pass when extracting attention.
    device
        ``auto``, ``cpu`` or ``cuda``.
    top_k
        Number of top attended genes reported and compared with DE.
    rank_bin
        Width of the rank-position bins of the change-by-rank curves.
    n_boot
        Bootstrap resamples of the change-by-rank bands.
    attribution_cells
        Test cells for the attribution baselines of the method comparison (0 skips them; at most the
        whole test split).
    n_seed_runs
        Fine-tunes on the real labels (the study's and ``n_seed_runs - 1`` more seeds): the real side of
        the run-level null.
    n_permuted_runs
        Fine-tunes on dose labels permuted between wells: the null side (0 skips the run-level null).
    permute_labels
        A null study: permute the study's labels between wells before anything else (each well keeps
        its cells); a sound analysis then finds that the model did not learn and nothing task-specific.
    ablation_top_k
        Most-changed heads ablated together, besides every head alone (0: single heads only).
    quick
        A quick look (e.g. a real file on a CPU): unless set otherwise, at most 300 cells per class
        (every well kept), 256 tokens per cell for a model pretrained here, 1 pretraining epoch, 50
        attribution cells and 100 bootstrap resamples (`QUICK`); the report says so.
    max_cells_per_class
        Subsample each class to at most this many cells, drawn within every well (wells stay units).
    """

    dataset: str = "nutlin-sim"
    data: str | None = None
    layer: str | None = None
    perturbation: str | None = None
    label_key: str = "label"
    classes: list[str] | None = None
    groups: str | None = None
    model: str | None = None
    dictionaries: str | None = None
    checkpoint: str = "auto"
    finetuned: str | None = None
    seed: int = 0
    out: str = "results"
    highlight: list[str] = dataclasses.field(default_factory=lambda: ["MDM2"])
    preset: str = "mini"
    cells_per_dose: int | None = None
    min_cells_per_class: int = 10
    model_input_size: int = 2048
    pretrain_epochs: int | None = None
    finetune_epochs: int | None = None
    pooling: str | None = None
    finetune_lr: float | None = None
    finetune_head_lr: float | None = None
    batch_size: int = 16
    attention_batch_size: int = 16
    device: str = "auto"
    top_k: int = 20
    rank_bin: int = 25
    n_boot: int = 200
    attribution_cells: int = 200
    n_seed_runs: int = 4
    n_permuted_runs: int = 4
    permute_labels: bool = False
    ablation_top_k: int = 3
    quick: bool = False
    max_cells_per_class: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _OPTIONAL:
                continue
            ok = _TYPES[f.name]
            if (isinstance(value, bool) and bool not in ok) or not isinstance(value, ok):
                msg = f"config: {f.name} must be {' or '.join(t.__name__ for t in ok)}, got {value!r}"
                raise InputError(msg)
        for name in ("classes", "highlight"):
            value = getattr(self, name)
            if value is not None:
                if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
                    msg = f"config: {name} must be a list of strings, got {value!r}"
                    raise InputError(msg)
                setattr(self, name, [_num_str(v) for v in value])
        if self.data is None and self.dataset not in DATASETS:
            msg = f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)} or pass --data FILE.h5ad"
            raise InputError(msg)
        if (self.model is None) != (self.dictionaries is None):
            msg = "--model and --dictionaries go together (a Geneformer checkpoint and its dictionaries)"
            raise InputError(msg)
        if self.pooling is not None and self.pooling not in POOLINGS:
            msg = f"config: pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"
            raise InputError(msg)
        if self.device not in _DEVICES:
            msg = f"config: device must be one of {_DEVICES}, got {self.device!r}"
            raise InputError(msg)
        self._check_ranges()
        self._check_names()

    def _check_ranges(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                msg = f"config: {name} must be >= 1, got {getattr(self, name)}"
                raise InputError(msg)
        for name in ("seed", "attribution_cells", "n_permuted_runs", "ablation_top_k"):
            if getattr(self, name) < 0:
                msg = f"config: {name} must be >= 0, got {getattr(self, name)}"
                raise InputError(msg)
        if self.seed > MAX_SEED:  # numpy/sklearn take 32-bit seeds; derived run seeds add offsets
            msg = f"config: seed must be <= {MAX_SEED}, got {self.seed}"
            raise InputError(msg)
        if self.max_cells_per_class is not None and self.max_cells_per_class < 10:
            msg = f"config: max_cells_per_class must be >= 10, got {self.max_cells_per_class}"
            raise InputError(msg)
        if self.cells_per_dose is not None and self.cells_per_dose < 1:
            msg = f"config: cells_per_dose must be >= 1, got {self.cells_per_dose}"
            raise InputError(msg)
        for name in ("finetune_lr", "finetune_head_lr"):
            lr = getattr(self, name)
            if lr is not None and not (math.isfinite(lr) and lr > 0):
                msg = f"config: {name} must be a finite number > 0, got {lr!r}"
                raise InputError(msg)

    def _check_names(self) -> None:
        from ..models import BUILTIN, PRESETS

        if self.checkpoint not in ("auto", "pretrain", *BUILTIN):
            msg = f"config: checkpoint must be auto, pretrain or one of {', '.join(sorted(BUILTIN))}, got {self.checkpoint!r}"
            raise InputError(msg)
        if self.model is not None and self.checkpoint not in ("auto", "pretrain"):
            msg = (
                f"--model and --checkpoint {self.checkpoint} exclude each other: choose one pretrained model"
            )
            raise InputError(msg)

        if self.preset not in PRESETS:
            msg = f"config: unknown preset {self.preset!r}; choose one of {', '.join(sorted(PRESETS))}"
            raise InputError(msg)
        if not self.highlight or not all(h.strip() for h in self.highlight):
            msg = f"config: highlight must name at least one gene, got {self.highlight!r}"
            raise InputError(msg)
        for name in ("label_key", "out"):
            if not getattr(self, name).strip():
                msg = f"config: {name} must not be empty"
                raise InputError(msg)

    @property
    def builtin(self) -> str | None:
        """The shipped checkpoint this study fine-tunes (None: ``model``, or one pretrained here)."""
        if self.model is not None or self.checkpoint == "pretrain":
            return None
        if self.checkpoint == "auto":  # the shipped checkpoint covers only the simulator's genes
            return "mini-nutlin" if self.source == "nutlin-sim" else None
        return self.checkpoint

    @property
    def source(self) -> str:
        """``"file"`` when ``data`` is given, else the built-in dataset's name."""
        return "file" if self.data is not None else self.dataset

    def resolved(self) -> StudyConfig:
        """A copy with dataset-specific defaults filled in (nutlin-sim: the study's 4 doses and groups).

        Also checks what needs the file system or the machine: input paths exist, ``out`` is not a
        file (or under one), a CUDA device exists when ``device="cuda"``.
        """
        c = dataclasses.replace(self)
        if c.source == "nutlin-sim":
            c.classes = c.classes if c.classes is not None else list(NUTLIN_CLASSES)
            c.groups = c.groups if c.groups is not None else NUTLIN_GROUPS
        if c.checkpoint == "auto":
            c.checkpoint = c.builtin or "pretrain"
        recipe = RECIPES["default"] if c.model is not None else RECIPES.get(c.source, RECIPES["default"])
        for name, value in recipe.items():
            if getattr(c, name) is None:
                setattr(c, name, value)
        for name in ("data", "model", "dictionaries", "finetuned", "out"):
            value = getattr(c, name)
            if value is not None:
                setattr(c, name, str(Path(value).expanduser().resolve()))
        _check_paths(c)
        _check_device(c.device)
        return c

    def to_dict(self) -> dict[str, object]:
        """Plain dict of the fields (lists copied)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> StudyConfig:
        """Build from a mapping; unknown keys are an `InputError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            msg = f"config: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}"
            raise InputError(msg)
        return cls(**dict(d))


#: the training recipe of a model pretrained here, by dataset, for the fields the user did not set
#: (``resolved``; with ``--model`` the default recipe applies). PBMC: its 692 cells are 40 pretraining
#: steps an epoch; with the default recipe (1 epoch: masked-gene loss above the unigram baseline; 4
#: fine-tuning epochs of <cls> pooling at 1e-3) test accuracy is 36%. 40 pretraining epochs (loss
#: 4.50 vs unigram 6.34; 20 epochs: 5.20), mean pooling, encoder / head learning rates 3e-4 / 3e-3
#: and 25 fine-tuning epochs were chosen by measurement on two splits (BENCHMARKS.md, "PBMC"). ``finetune_lr`` None:
#: 1e-3 for a mini model, 5e-5 with ``--model``.
RECIPES: dict[str, dict[str, int | float | str]] = {
    "default": {"pretrain_epochs": 1, "finetune_epochs": 4, "finetune_head_lr": 1e-3, "pooling": "auto"},
    "pbmc68k": {"pretrain_epochs": 40, "finetune_epochs": 25, "finetune_lr": 3e-4, "finetune_head_lr": 3e-3,
                "pooling": "mean"},
}  # fmt: skip

#: the quick look's defaults (fields the user did not set)
QUICK = {
    "max_cells_per_class": 300,
    "model_input_size": 256,
    "pretrain_epochs": 1,
    "attribution_cells": 50,
    "n_boot": 100,
}

_POSITIVE = ("n_seed_runs", "min_cells_per_class", "model_input_size", "pretrain_epochs", "finetune_epochs", "batch_size",
             "attention_batch_size", "top_k", "rank_bin", "n_boot")  # fmt: skip
_INPUT_PATHS = {"data": "data file", "model": "model directory", "dictionaries": "dictionaries directory",
                "finetuned": "fine-tuned model directory"}  # fmt: skip


def _check_paths(c: StudyConfig) -> None:
    """InputError for a missing input, a data file that is no ``.h5ad``, or an ``out`` that is a file."""
    for name, what in _INPUT_PATHS.items():
        p = getattr(c, name)
        if p is not None and not Path(p).exists():
            msg = f"{what} not found: {p}"
            raise InputError(msg)
    if c.data is not None and not str(c.data).endswith(".h5ad"):
        msg = f"--data must be an .h5ad file, got {c.data}"
        raise InputError(msg)
    out = Path(c.out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                msg = f"--out {out} cannot be a results directory: {p} is a file"
                raise InputError(msg)
            break


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            msg = "--device cuda, but no CUDA device is available here; use --device cpu (or auto)"
            raise InputError(msg)
    elif device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            msg = "--device mps, but MPS is not available here; use --device cpu (or auto)"
            raise InputError(msg)


def _num_str(v: Any) -> str:
    """Class labels as strings: ``10`` and ``10.0`` -> ``"10"``, ``0.5`` -> ``"0.5"``."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))
    return str(v)


def load_toml(path: str | os.PathLike[str]) -> dict[str, object]:
    """Read a study config file (flat TOML, or everything under a ``[study]`` table)."""
    p = Path(path)
    if not p.is_file():
        msg = f"config file not found: {p}"
        raise InputError(msg)
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        msg = f"config file {p} is not valid TOML: {e}"
        raise InputError(msg) from None
    if set(d) == {"study"} and isinstance(d["study"], dict):
        d = d["study"]
    return d


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return '"' + "".join(_toml_char(ch) for ch in v) + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    msg = f"cannot write {type(v).__name__} to TOML"
    raise TypeError(msg)


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_char(ch: str) -> str:
    """One character of a TOML basic string: quotes, backslashes and control characters escaped."""
    if ch in _TOML_ESCAPES:
        return _TOML_ESCAPES[ch]
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\u{ord(ch):04X}"
    return ch


def dump_toml(d: Mapping[str, object], *, header: str | None = None) -> str:
    """Serialise a flat mapping of str/int/float/bool/lists to TOML (``None`` values are left out)."""
    lines = [f"# {line}" for line in (header or "").splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in d.items() if v is not None]
    return "\n".join(lines) + "\n"


def merge(file_values: Mapping[str, object] | None, cli_values: Mapping[str, object] | None) -> StudyConfig:
    """CLI flag > config file > default; ``None`` CLI values mean "not given"."""
    merged = dict(file_values or {})
    merged.update({k: v for k, v in (cli_values or {}).items() if v is not None})
    if merged.get("quick") is True:  # a quick look changes defaults, never what the user set
        merged = {**QUICK, **merged}
    return StudyConfig.from_dict(merged)
