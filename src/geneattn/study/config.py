"""`StudyConfig`: every setting of one study (`geneattn run`), with TOML reading and writing.

Precedence is CLI flag > config file > default (`merge`). The resolved config is written to
``results/config.toml``; ``geneattn run --config results/config.toml`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
import types
import typing
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
    "setting",
    "field_types",
]

DATASETS = ("nutlin-sim", "pbmc68k")
NUTLIN_CLASSES = ("0.1", "0.5", "5", "10")
NUTLIN_GROUPS = "low=0.1,0.5;high=5,10"
_DEVICES = ("auto", "cpu", "cuda", "mps")


#: largest study seed: numpy's legacy and sklearn seeds take 32 bits, and the control runs' seeds are the
#: study's plus offsets (``seed + 1000 i``, ``seed + 7919 i``), which must stay below 2**32
MAX_SEED = 2**31 - 1


def setting(
    default: object, help: str, *, doc: str = "", short: str | None = None, path: bool = False
) -> Any:  # noqa: A002
    """A `StudyConfig` field with its one declaration of help and flag (``dataclasses.field`` metadata).

    Parameters
    ----------
    default
        The default (a list is copied for every instance).
    help
        One sentence for ``geneattn run --help`` (the default is appended there).
    doc
        More detail for the class docstring (after ``help``).
    short
        A one-letter alias of the flag (``-o``); the flag itself is always ``--<name-with-dashes>``.
    path
        The value is a path (the CLI takes a path and stores it as a string).
    """
    meta = {"help": help, "doc": doc, "short": short, "path": path}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class StudyConfig:
    """Settings of one study: every field is a `geneattn run` flag (``--<name-with-dashes>``) and a TOML key.

    Each field declares its help once (`setting`); the CLI options, the TOML type checks and the
    attribute list below are made from it.
    """

    dataset: str = setting(
        "nutlin-sim",
        "Built-in dataset: nutlin-sim (simulated sci-Plex-2 nutlin-3a) or pbmc68k.",
        doc="Ignored when data is given.",
    )
    data: str | None = setting(
        None,
        "An .h5ad file (canonical, scPerturb or sci-Plex-2 layout) instead of a built-in dataset.",
        path=True,
    )
    layer: str | None = setting(
        None, "With --data: the layer with raw counts when X is normalised, e.g. counts."
    )
    perturbation: str | None = setting(None, "sci-Plex drug to keep, e.g. Nutlin.")
    label_key: str = setting("label", "obs column with the class to predict.")
    classes: list[str] | None = setting(
        None,
        "Comma-separated classes to keep, in order, e.g. 0.1,0.5,5,10.",
        doc="nutlin-sim default: 0.1, 0.5, 5, 10.",
    )
    groups: str | None = setting(
        None,
        "Coarse groups of classes, e.g. 'low=0.1,0.5;high=5,10'.",
        doc="nutlin-sim default: low=0.1,0.5;high=5,10.",
    )
    model: str | None = setting(
        None,
        "A Geneformer checkpoint directory (skips pretraining; needs --dictionaries).",
        doc="It replaces checkpoint.",
        path=True,
    )
    dictionaries: str | None = setting(
        None, "Directory with the Geneformer dictionaries of --model.", path=True
    )
    checkpoint: str = setting(
        "auto",
        "Pretrained model without --model: auto, pretrain or a shipped checkpoint (mini-nutlin).",
        doc="auto: the shipped mini-nutlin for the nutlin-sim study (its vocabulary covers only the "
        "simulator's genes), else pretrain: a preset model pretrained on the corpus.",
    )
    finetuned: str | None = setting(
        None,
        "An already fine-tuned classifier of the pretrained model: analysed without fine-tuning here.",
        doc="geneattn finetune's output, or a Geneformer-format BertForSequenceClassification directory; it is "
        "evaluated on the study's test split when its labels are the study's classes, and the analyses that "
        "need control fine-tunes (the run-level null) are skipped.",
        path=True,
    )
    seed: int = setting(0, "Seed of every stochastic step.")
    out: str = setting("results", "Results directory.", short="-o", path=True)
    highlight: list[str] = setting(
        ["MDM2"],
        "Comma-separated genes highlighted in the figures and reported by rank.",
        doc="The default is nutlin-3a's target MDM2.",
    )
    preset: str = setting("mini", "Model size pretrained without --model.")
    cells_per_dose: int | None = setting(None, "nutlin-sim only: cells per dose (default: the simulator's).")
    min_cells_per_class: int = setting(10, "Classes with fewer cells are an input error.")
    model_input_size: int = setting(
        2048,
        "Maximum tokens per cell (Geneformer V1: 2048).",
        doc="The shipped checkpoint and a Geneformer model cap it at their own input size.",
    )
    pretrain_epochs: int | None = setting(
        None, "Pretraining epochs (default: the dataset's recipe, 1; pbmc68k 40)."
    )
    finetune_epochs: int | None = setting(
        None, "Fine-tuning epochs (default: the dataset's recipe, 4; pbmc68k 25)."
    )
    pooling: str | None = setting(
        None,
        "Classifier pooling: auto, cls, first or mean (default: the recipe, auto; pbmc68k mean).",
        doc="auto: the checkpoint's <cls>, or the first gene of Geneformer V1 tokens; mean: masked "
        "mean of the last hidden states.",
    )
    finetune_lr: float | None = setting(
        None,
        "Fine-tuning learning rate (default 1e-3 for a mini model, pbmc68k 3e-4, 5e-5 with --model).",
        doc="A small model needs 1e-3: at 1e-4 it does not learn within a few epochs.",
    )
    finetune_head_lr: float | None = setting(
        None, "Learning rate of the classifier head (default: the recipe, 1e-3; pbmc68k 3e-3)."
    )
    batch_size: int = setting(16, "Cells per training step.")
    attention_batch_size: int = setting(16, "Cells per forward pass when extracting attention.")
    device: str = setting("auto", "auto, cpu, cuda or mps.")
    top_k: int = setting(20, "Top attended genes reported and compared with DE.")
    rank_bin: int = setting(25, "Width of the rank-position bins of the change-by-rank curves.")
    n_boot: int = setting(200, "Bootstrap resamples (change-by-rank bands, intervals).")
    attribution_cells: int = setting(
        200, "Test cells for the attribution baselines (0 skips them).", doc="At most the whole test split."
    )
    n_seed_runs: int = setting(
        6,
        "Real-label fine-tunes of the run-level null (the study's and more seeds).",
        doc="6 + 6 runs by default: the least that finds the positive control's switch gene at FDR 0.05 "
        "(docs/positive-control.md); the power calculation in the report (tables/power) and BENCHMARKS.md.",
    )
    n_permuted_runs: int = setting(
        6,
        "Permuted-label fine-tunes of the run-level null (0 skips it).",
        doc="Labels permuted between wells by a restricted permutation that carries no label information.",
    )
    permute_labels: bool = setting(
        False,
        "A null study: labels permuted between wells before anything else.",
        doc="Each well keeps its cells; a sound analysis then finds that the model did not "
        "learn and nothing task-specific.",
    )
    ablation_top_k: int = setting(
        3, "Most-changed heads ablated together, besides every head alone (0: single heads only)."
    )
    quick: bool = setting(
        False,
        "A quick look: fewer cells (every well kept), shorter inputs for a model pretrained here.",
        doc="Unless set otherwise: at most 300 cells per class, 256 tokens per cell, 1 pretraining "
        "epoch, 50 attribution cells and 100 bootstrap resamples (QUICK); the report says so.",
    )
    max_cells_per_class: int | None = setting(
        None, "Subsample each class to at most this many cells (every well kept)."
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ok, optional = field_types()[f.name]
            if value is None and optional:
                continue
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


@functools.cache
def field_types() -> dict[str, tuple[tuple[type, ...], bool]]:
    """Field -> (accepted Python types, whether None is allowed), from `StudyConfig`'s annotations.

    TOML gives ``int`` for whole numbers, so a ``float`` field accepts ``int`` too.
    """
    out = {}
    for name, hint in typing.get_type_hints(StudyConfig).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        base = next(a for a in args if a is not type(None))
        base = typing.get_origin(base) or base
        out[name] = ((float, int) if base is float else (base,), type(None) in args)
    return out


def _attributes_doc() -> str:
    """The ``Attributes`` section of `StudyConfig`'s docstring, from each field's `setting`."""
    lines = ["", "    Attributes", "    ----------"]
    for f in dataclasses.fields(StudyConfig):
        lines += [
            f"    {f.name}",
            f"        {' '.join(filter(None, (f.metadata['help'], f.metadata['doc'])))}",
        ]
    return "\n".join(lines) + "\n"


StudyConfig.__doc__ = (StudyConfig.__doc__ or "").rstrip() + "\n" + _attributes_doc()


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
