"""Checks of what later stages need, made before the study writes anything.

`check_config` runs in `run_study` before the results folder is created or locked: the output spares
every input and holds nothing that is not geneattn's, the model and dictionaries directories are
usable and match, and the run counts leave the run-level null a residual degree of freedom.
`check_study` runs in the ``data`` stage on the loaded cells, before ``data/study.h5ad`` is written:
enough cells per class for DE and the splits, wells to permute for a null study, and genes the
pretrained model's vocabulary covers. A configuration that passes both does not fail in a later stage
for any of these reasons.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _keys as K
from .._lock import LOCK_FILE
from .._owned import check_name_lengths, check_out_spares_inputs, check_out_tree
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

    from .._results import Results
    from ..tokenize import GeneVocab
    from .config import StudyConfig

__all__ = [
    "check_config",
    "check_study",
    "check_results_files",
    "MIN_CELLS_PER_CLASS",
    "MIN_NULL_RUNS",
    "RESULT_FILES",
]

logger = logging.getLogger(__name__)

#: cells a class needs: one each in the training, validation and test splits (DE needs two)
MIN_CELLS_PER_CLASS = 3
#: fine-tunes the run-level null needs (`geneattn.stats.nulls.task_attributable`: intercept, kind, and
#: one residual degree of freedom), with at least one real-label and one permuted-label run
MIN_NULL_RUNS = 3
#: files geneattn writes at the top of a results folder, and the folders it fills (`geneattn._results`)
RESULT_FILES = ("config.toml", "manifest.json", "metrics.json", "report.html", "cells.h5ad", "plan.json")
RESULT_DIRS = ("data", "tokens", "corpus_tokens", "models", "attention", "tables", "figures", "runs")
#: below this share of the study's genes in the model's vocabulary, tokenization refuses the data
MIN_GENE_FRACTION = 0.1


def check_config(cfg: StudyConfig) -> None:
    """Everything `run_study` can check from a resolved config, before its first write.

    Raises
    ------
    InputError
        The first problem found, in one line that names the fix.
    """
    _check_run_counts(cfg)
    _check_out(cfg)
    if cfg.model is not None:
        model_vocab(cfg.model, cfg.dictionaries)


def _check_run_counts(cfg: StudyConfig) -> None:
    if cfg.n_permuted_runs > 0 and cfg.n_seed_runs + cfg.n_permuted_runs < MIN_NULL_RUNS:
        msg = (
            f"the run-level null needs at least {MIN_NULL_RUNS} fine-tunes to leave a residual degree of "
            f"freedom, got n_seed_runs {cfg.n_seed_runs} + n_permuted_runs {cfg.n_permuted_runs}: raise one "
            "of them (e.g. --n-seed-runs 2), or skip the null with --n-permuted-runs 0"
        )
        raise InputError(msg)


def _check_out(cfg: StudyConfig) -> None:
    """The results folder spares the inputs and holds only what geneattn wrote there."""
    check_name_lengths(cfg.out)
    inputs = {"--data": cfg.data, "--model": cfg.model, "--dictionaries": cfg.dictionaries}
    check_out_spares_inputs(cfg.out, inputs)
    out = Path(cfg.out)
    if not out.is_dir():
        return
    check_out_tree(out)
    manifest = out / "manifest.json"
    if manifest.is_file():
        _check_manifest(manifest)
        return
    foreign = [n for n in RESULT_FILES if (out / n).exists()]
    foreign += [n for n in RESULT_DIRS if (out / n).is_dir() and _has_files(out / n)]
    if foreign:
        msg = (
            f"--out {out} holds {', '.join(foreign)} but no geneattn manifest.json: they are not geneattn's "
            "results and a study would replace them; choose another --out"
        )
        raise InputError(msg)


def _has_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything but temporary files of a killed run (``.tmp-*``)."""
    from .._atomic import TMP_PREFIX

    return any(not p.name.startswith(TMP_PREFIX) and p.name != LOCK_FILE for p in folder.rglob("*"))


def _check_manifest(path: Path) -> None:
    """InputError when ``manifest.json`` parses but is not a geneattn manifest (another tool's folder)."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # unreadable: the engine warns and re-runs every stage
    if not isinstance(m, dict) or not isinstance(m.get("stages"), dict):
        msg = (
            f"{path} is not a geneattn manifest (a JSON object with 'stages'): {path.parent} holds another "
            "tool's results; choose another --out"
        )
        raise InputError(msg)


def _model_config(model: Path) -> int:
    """The vocabulary size in ``model/config.json``, checked."""
    if not model.is_dir():
        msg = f"--model {model} is not a directory; pass a Geneformer checkpoint directory (config.json + weights)"
        raise InputError(msg)
    path = model / "config.json"
    if not path.is_file():
        msg = f"--model {model} has no config.json; pass a Geneformer checkpoint directory"
        raise InputError(msg)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        msg = f"{path} is not valid JSON ({type(e).__name__}: {e})"
        raise InputError(msg) from None
    n = config.get("vocab_size") if isinstance(config, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        msg = f"{path} has no vocab_size (a positive integer), got {n!r}; is it a BERT/Geneformer checkpoint?"
        raise InputError(msg)
    return n


def model_vocab(model: str, dictionaries: str | None) -> GeneVocab:
    """The Geneformer dictionaries of ``model``, checked against its vocabulary size (`InputError` if not)."""
    from ..models import geneformer_vocab

    _model_config(Path(model))
    if dictionaries is None or not Path(dictionaries).is_dir():
        msg = f"--dictionaries {dictionaries} is not a directory; pass the folder with the Geneformer dictionaries"
        raise InputError(msg)
    return geneformer_vocab(model, dictionaries)


def check_study(study: AnnData, cfg: StudyConfig) -> None:
    """Checks of the loaded cells that later stages need (the ``data`` stage, before it writes).

    Raises
    ------
    InputError
        A class too small for DE and the splits, a null study without wells to permute, or genes the
        pretrained model's vocabulary does not cover.
    """
    labels = study.obs[K.LABEL].astype(str)
    sizes = labels.value_counts()
    small = sizes[sizes < MIN_CELLS_PER_CLASS]
    if len(small):
        detail = ", ".join(f"{c!r}: {n}" for c, n in small.items())
        msg = (
            f"classes with fewer than {MIN_CELLS_PER_CLASS} cells ({detail}): every class needs cells for "
            "training, validation and test and two for DE; drop them with --classes or give more cells"
        )
        raise InputError(msg)
    if cfg.permute_labels:
        _check_permutable(study)
    _check_coverage(study, cfg)


def _check_permutable(study: AnnData) -> None:
    unit = next((k for k in (K.WELL, K.REPLICATE) if k in study.obs), None)
    if unit is None:
        return  # labels are permuted between cells
    per_class = study.obs.groupby(K.LABEL, observed=True)[unit].nunique()
    if (per_class <= 1).all():
        msg = (
            f"--permute-labels needs classes with several {unit}s: each class here has one, so permuting labels "
            f"between {unit}s only renames the classes and gives no null study"
        )
        raise InputError(msg)


def _check_coverage(study: AnnData, cfg: StudyConfig) -> None:
    """The pretrained model's vocabulary must cover the study's genes (as tokenization will demand)."""
    if cfg.builtin is None and cfg.model is None:
        return  # the vocabulary is built from these cells
    from ..tokenize import GeneVocab
    from ..tokenize._genes import plan_genes

    if cfg.builtin is not None:
        from ..models import builtin_checkpoint

        vocab, which = GeneVocab.from_json(builtin_checkpoint(cfg.builtin) / "vocab.json"), cfg.builtin
        fix = "use --checkpoint pretrain to pretrain a model on these cells"
    else:
        vocab, which = model_vocab(cfg.model, cfg.dictionaries), str(cfg.model)
        fix = "check --dictionaries and that the data have Ensembl ids"
    ids = study.var[K.ENSEMBL_ID].astype(object).to_numpy() if K.ENSEMBL_ID in study.var else study.var_names
    try:
        plan = plan_genes(np.asarray(ids, dtype=object), vocab)
        frac = float((plan.colmap >= 0).mean()) if len(ids) else 0.0
    except InputError:  # no gene maps at all
        frac = 0.0
    if frac < MIN_GENE_FRACTION:
        msg = (
            f"the vocabulary of {which} covers {frac:.0%} of the data's {len(ids)} genes (at least "
            f"{MIN_GENE_FRACTION:.0%} needed): {fix}"
        )
        raise InputError(msg)


def check_results_files(res: Results) -> None:
    """InputError for a damaged ``manifest.json`` or ``config.toml`` of an existing results folder."""
    from .config import StudyConfig, load_toml

    if res.manifest.is_file():
        _check_manifest(res.manifest)
    if res.config.is_file():
        try:
            StudyConfig.from_dict(load_toml(res.config))
        except InputError as e:
            msg = f"{res.config} is damaged: {e}; re-run `geneattn run` or fix the file"
            raise InputError(msg) from e
