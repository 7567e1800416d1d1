"""AnnData (in memory, backed, or an ``.h5ad`` path) -> tokenized `datasets.Dataset` on disk.

Rows are read in chunks (files are never loaded whole), mapped onto the vocabulary, rank-value
encoded and appended to Arrow IPC stream shards, so peak memory depends on the chunk size, not
on the number of cells. The output directory is the layout ``Dataset.save_to_disk`` writes
(``data-XXXXX-of-XXXXX.arrow``, ``dataset_info.json``, ``state.json``) plus geneattn's
``vocab.json`` and ``tokenize.json`` (see `_store`); ``datasets.load_from_disk`` reads it (it
only opens the files listed in ``state.json``), and so does Geneformer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .. import _keys
from .._atomic import atomic_dir
from .._settings import settings
from ..errors import InputError
from ._genes import GenePlan, plan_genes, remap_chunk
from ._input import Counts, check_values, checked_n_counts, filter_pass, gene_ids, open_input, row_chunks
from ._store import PARAMS_FILE, VOCAB_FILE, Sink, check_out, schema, static_columns
from .rank_value import encode
from .vocab import GeneVocab

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

    import datasets

__all__ = ["tokenize", "geneformer_settings", "load_tokens", "load_vocab", "VOCAB_FILE", "PARAMS_FILE"]

logger = logging.getLogger(__name__)

_RESERVED = (_keys.INPUT_IDS, _keys.LENGTH, _keys.CELL_ID)
#: Geneformer's model input sizes: V1 (gc30M, no special tokens) and V2 (gc104M, <cls>/<eos>)
V1_INPUT_SIZE, V2_INPUT_SIZE = 2048, 4096


def geneformer_settings(
    vocab: GeneVocab, *, special_tokens: bool | None = None, model_input_size: int | None = None
) -> tuple[bool, int]:
    """Special tokens and model input size for tokenizing with ``vocab``, as Geneformer's presets.

    The one place where these defaults are decided: Geneformer V1 dictionaries (no ``<cls>``/
    ``<eos>``) give ``(False, 2048)``, V2 dictionaries ``(True, 4096)``. A vocabulary built by
    geneattn follows its own special tokens the same way: with ``<cls>``/``<eos>``
    (``build_vocab(special_tokens=True)``) as V2, without as V1.

    Parameters
    ----------
    vocab
        The vocabulary.
    special_tokens
        Given explicitly (``None``: whether ``vocab`` has both ``<cls>`` and ``<eos>``).
    model_input_size
        Given explicitly (``None``: 4096 with special tokens, else 2048).

    Returns
    -------
    special_tokens, model_input_size
    """
    special = (
        special_tokens
        if special_tokens is not None
        else vocab.cls_id is not None and vocab.eos_id is not None
    )
    size = model_input_size if model_input_size is not None else (V2_INPUT_SIZE if special else V1_INPUT_SIZE)
    return bool(special), int(size)


def tokenize(
    data: AnnData | str | os.PathLike[str],
    vocab: GeneVocab,
    *,
    out: str | os.PathLike[str] | None = None,
    model_input_size: int | None = None,
    special_tokens: bool = False,
    obs_keys: Sequence[str] = (),
    chunk_size: int = 512,
    gene_id_key: str | None = "ensembl_id",
    layer: str | None = None,
    collapse_gene_ids: bool = True,
    n_counts_key: str = "n_counts",
    filter_key: str = "filter_pass",
    n_jobs: int | None = None,
    min_gene_fraction: float = 0.1,
) -> datasets.Dataset:
    """Rank-value encode cells exactly as Geneformer's ``TranscriptomeTokenizer``.

    Parameters
    ----------
    data
        Raw counts: an AnnData (in memory or backed) or an ``.h5ad`` path (opened read-only and
        read chunk by chunk; the file is never modified).
    vocab
        Geneformer's dictionaries (`GeneVocab.from_geneformer`) or a built vocabulary.
    out
        Directory to write (atomically) with ``save_to_disk``'s layout plus ``vocab.json`` and
        ``tokenize.json``. ``None`` returns an in-memory dataset.
    model_input_size
        Maximum length, special tokens included; ``None``: Geneformer's for ``special_tokens``
        (2048 without, as V1; 4096 with, as V2; see `geneformer_settings`).
    special_tokens
        Add ``<cls>`` first and ``<eos>`` last (V2). The vocabulary must have both.
    obs_keys
        ``obs`` columns copied to the dataset (same names).
    chunk_size
        Cells per chunk (bounds memory).
    gene_id_key
        ``var`` column with gene ids; ``None`` uses ``var_names``. Ensembl version suffixes
        (``ENSG….12``) are removed, as `geneattn.io.canonicalize` does.
    layer
        Where the raw counts are: ``None`` for ``X``, a layer name (e.g. ``"counts"`` when ``X``
        holds normalised values), or ``"raw"`` for ``adata.raw`` (whose genes are then used).
    collapse_gene_ids
        Map ids through the vocabulary's mapping and sum duplicates (Geneformer's default).
    n_counts_key
        ``obs`` column with total counts (used as given). When absent, row sums of ``X`` (in
        ``X``'s float dtype) are used and a warning is logged.
    filter_key
        Optional ``obs`` column; only cells whose value equals 1 (or True) are tokenized.
    n_jobs
        Worker threads encoding chunks; ``None`` uses ``settings.n_jobs`` or up to 4 CPUs.
        Output does not depend on it.
    min_gene_fraction
        Refuse inputs in which fewer than this fraction of the gene ids map to the vocabulary
        (wrong id type, species or dictionaries); a warning below one half. 0 disables the check.

    Returns
    -------
    Columns ``input_ids`` (list of int32), ``length`` (int64), ``cell_id`` (``obs_names``) and
    ``obs_keys``, one row per tokenized cell in input order. Cells expressing no vocabulary gene
    are dropped (warning; counted in ``tokenize.json``). For an in-memory AnnData the parameters
    are also recorded in ``adata.uns["tokenize"]["params"]``.
    """
    t0 = time.perf_counter()
    _check_vocab(vocab)
    _, model_input_size = geneformer_settings(
        vocab, special_tokens=special_tokens, model_input_size=model_input_size
    )
    obs_keys = _check_params(vocab, model_input_size, chunk_size, obs_keys, special_tokens=special_tokens)
    out_path = check_out(out)
    with contextlib.ExitStack() as stack:
        counts = open_input(data, layer=layer)
        stack.callback(counts.close)
        missing = [k for k in obs_keys if k not in counts.obs.columns]
        if missing:
            msg = f"obs has no column(s) {missing} (columns: {list(counts.obs.columns)})"
            raise InputError(msg)
        ids, _ = gene_ids(counts.var, gene_id_key)
        plan = plan_genes(ids, vocab, collapse_gene_ids=collapse_gene_ids)
        if min_gene_fraction > 0:
            _check_coverage(ids, plan, min_gene_fraction, counts)
        n_counts = checked_n_counts(counts.obs, n_counts_key)
        passing = filter_pass(counts.obs, filter_key)
        columns = static_columns(counts.obs, obs_keys)
        tmp = stack.enter_context(atomic_dir(out_path)) if out_path is not None else None
        sink = Sink(schema(columns), tmp)
        stack.callback(sink.close)
        cls_id, eos_id = (vocab.cls_id, vocab.eos_id) if special_tokens else (None, None)
        work = functools.partial(_encode_chunk, plan=plan, n_counts=n_counts, passing=passing,
                                 model_input_size=model_input_size, cls_id=cls_id, eos_id=eos_id,
                                 what=counts.what, hint=counts.hint())  # fmt: skip
        # serialise the vocabulary while the first chunks are encoded
        warm = (lambda: (vocab.fingerprint, vocab.core_json)) if tmp is not None else None
        n_empty = _encode_all(counts, work, sink, columns, chunk_size=chunk_size, n_jobs=n_jobs, warm=warm)
        if n_empty:
            logger.warning("dropped %d cells that express no vocabulary gene (empty droplets?)", n_empty)
        if sink.n_rows == 0:
            msg = "no cell left to tokenize (none passes filter_pass or expresses a vocabulary gene)"
            raise InputError(msg)
        call = {"model_input_size": int(model_input_size), "special_tokens": bool(special_tokens),
                "obs_keys": list(obs_keys), "chunk_size": int(chunk_size), "gene_id_key": gene_id_key,
                "layer": layer, "collapse_gene_ids": bool(collapse_gene_ids), "n_counts_key": n_counts_key}  # fmt: skip
        params = _params(call, vocab, plan, counts, filter_key=filter_key, passing=passing,
                         n_counts_source="obs" if n_counts is not None else "row_sums", n_empty=n_empty,
                         n_out=sink.n_rows, data=data)  # fmt: skip
        if not isinstance(data, str | os.PathLike) and not data.isbacked and not data.is_view:
            data.uns["tokenize"] = {"params": {k: v for k, v in params.items() if v is not None}}
        params["seconds"] = round(time.perf_counter() - t0, 3)
        if tmp is None:
            return sink.to_dataset()
        sink.finish(_with_symbols(vocab, counts.var, plan, gene_id_key), params)
    logger.info("tokenized %d cells -> %s (%.1f s)", params["n_cells_out"], out_path, params["seconds"])
    return load_tokens(out_path)


def _encode_all(
    counts: Counts,
    work: Callable[[int, sp.csr_matrix], tuple[np.ndarray, np.ndarray, np.ndarray, int] | None],
    sink: Sink,
    columns: dict[str, Any],
    *,
    chunk_size: int,
    n_jobs: int | None,
    warm: Callable[[], object] | None,
) -> int:
    """Encode every chunk of ``counts`` with ``work`` and add the cells to ``sink`` in input order.

    numpy's sorts release the GIL: chunks are encoded by worker threads while this thread reads
    the next chunks and writes finished ones in input order (a bounded queue). Returns the
    number of empty cells dropped.
    """
    n_empty = 0
    n_workers = _n_workers(n_jobs)
    pending: deque[Future[Any]] = deque()

    def drain(limit: int) -> None:
        nonlocal n_empty
        while len(pending) > limit:
            result = pending.popleft().result()
            if result is not None:
                flat, offsets, rows, empty = result
                n_empty += empty
                if rows.size:
                    sink.add(flat, offsets, rows, columns)

    bar = tqdm(total=counts.n_obs, desc="tokenize", unit="cell", disable=not settings.progress)
    with ThreadPoolExecutor(max_workers=n_workers) as pool, bar:
        if warm is not None:
            pool.submit(warm)
        for start, x in row_chunks(counts, chunk_size):
            pending.append(pool.submit(work, start, x))
            bar.update(x.shape[0])
            drain(n_workers)
        drain(0)
    return n_empty


def _params(
    call: dict[str, Any],
    vocab: GeneVocab,
    plan: GenePlan,
    counts: Counts,
    *,
    filter_key: str,
    passing: np.ndarray,
    n_counts_source: str,
    n_empty: int,
    n_out: int,
    data: AnnData | str | os.PathLike[str],
) -> dict[str, Any]:
    """The parameters and counts recorded in ``tokenize.json`` and ``uns["tokenize"]["params"]``."""
    return {
        **call,
        "n_counts_source": n_counts_source,
        "filter_key": filter_key if filter_key in counts.obs.columns else None,
        "vocab_fingerprint": vocab.fingerprint,
        "vocab_size": vocab.size,
        "gene_path": plan.path,
        "n_genes_in": counts.n_vars,
        "n_genes_mapped": int((plan.colmap >= 0).sum()),
        "n_vocab_columns": int(plan.tokens.size),
        "n_summed_groups": int(plan.n_summed_groups),
        "n_cells_in": counts.n_obs,
        "n_cells_filtered_out": int(counts.n_obs - passing.sum()),
        "n_cells_empty": n_empty,
        "n_cells_out": int(n_out),
        "input": str(data) if isinstance(data, str | os.PathLike) else "AnnData",
        "token_dtype": "int32",
    }


def _encode_chunk(
    start: int,
    x: sp.csr_matrix,
    *,
    plan: GenePlan,
    n_counts: np.ndarray | None,
    passing: np.ndarray,
    model_input_size: int,
    cls_id: int | None,
    eos_id: int | None,
    what: str,
    hint: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Encode one chunk of rows: (tokens, offsets, input row numbers, n empty cells dropped)."""
    check_values(x, start, what=what, hint=hint)
    rows = start + np.flatnonzero(passing[start : start + x.shape[0]])
    if rows.size == 0:
        return None
    if rows.size < x.shape[0]:
        x = x[rows - start]
    n = n_counts[rows] if n_counts is not None else _row_sums(x, rows)
    data, indices, indptr = remap_chunk(x, plan)
    nonempty = np.diff(indptr) > 0
    n_empty = int(nonempty.size - np.count_nonzero(nonempty))
    if n_empty:  # empty rows own no data: dropping them from indptr is enough
        rows, n = rows[nonempty], n[nonempty]
        indptr = np.concatenate([indptr[:1], indptr[1:][nonempty]])
    flat, offsets = encode(
        data,
        indptr,
        indices,
        n_counts=n,
        tokens=plan.tokens,
        recip_medians=plan.recip_medians,
        model_input_size=model_input_size,
        cls_id=cls_id,
        eos_id=eos_id,
    )
    return flat, offsets, rows, n_empty


def _check_coverage(
    ids: np.ndarray, plan: GenePlan, min_fraction: float, counts: Counts | None = None
) -> None:
    """InputError when too few input gene ids map to the vocabulary (wrong ids or dictionaries).

    Genes never detected in the input (all-zero columns) do not count: a vocabulary built from the
    input holds only the genes it detects, and undetected genes never become tokens anyway.
    """
    mapped = plan.colmap >= 0
    if mapped.sum() >= 0.5 * max(len(ids), 1):
        return
    if counts is not None:
        detected = _detected_columns(counts)
        if detected.any():
            ids, mapped = ids[detected], mapped[detected]
    n_in, n_mapped = len(ids), int(mapped.sum())
    frac = n_mapped / max(n_in, 1)
    if frac >= 0.5:
        return
    unmapped = [str(i) for i, c in zip(ids, mapped, strict=True) if not c][:3]
    what = f"only {n_mapped} of {n_in} gene ids detected in the data ({frac:.0%}) map to the vocabulary (unmapped e.g. {unmapped})"
    if frac < min_fraction:
        msg = (
            f"{what}: the gene ids are probably not Ensembl ids of this vocabulary's species, or the "
            "dictionaries do not match; pass the right gene id column (--gene-id-key) or dictionaries"
        )
        raise InputError(msg)
    logger.warning("%s; check the gene id column and the dictionaries", what)


def _detected_columns(counts: Counts, chunk_size: int = 4096) -> np.ndarray:
    """Whether each input column holds a nonzero count in any cell (one pass over the counts)."""
    seen = np.zeros(counts.n_vars, dtype=bool)
    for _, x in row_chunks(counts, chunk_size):
        seen[x.indices[x.data != 0]] = True
    return seen


def _n_workers(n_jobs: int | None) -> int:
    n = n_jobs if n_jobs is not None else settings.n_jobs
    if n is None:
        n = min(
            4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        )
    return max(1, int(n))


def load_tokens(path: str | os.PathLike[str]) -> datasets.Dataset:
    """Load a tokenized dataset (geneattn's or Geneformer's ``.dataset`` directory)."""
    import datasets

    path = Path(path)
    if not (path / "state.json").is_file():
        msg = f"{path} is not a tokenized dataset directory (no state.json)"
        raise InputError(msg)
    return datasets.load_from_disk(str(path))


def load_vocab(tokens_path: str | os.PathLike[str]) -> GeneVocab:
    """The vocabulary saved beside tokens written by `tokenize` (``<tokens_path>/vocab.json``)."""
    p = Path(tokens_path)
    p = p if p.suffix == ".json" else p / VOCAB_FILE
    if not p.is_file():
        msg = f"no vocabulary at {p}: tokens written by Geneformer need its dictionaries"
        raise InputError(msg)
    return GeneVocab.from_json(p)


def _row_sums(x: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    sums = np.asarray(x.sum(axis=1, dtype=np.float64)).ravel()
    if np.issubdtype(x.dtype, np.floating):
        sums = sums.astype(x.dtype)  # as `X.sum(1)` would store it in obs
    if np.any(sums <= 0):
        msg = f"{int((sums <= 0).sum())} cells have zero total counts (rows near {int(rows[0])})"
        raise InputError(msg)
    return sums


def _check_vocab(vocab: GeneVocab) -> None:
    if not isinstance(vocab, GeneVocab):
        msg = f"vocab must be a GeneVocab, got {type(vocab).__name__}"
        raise InputError(msg)


def _check_params(
    vocab: GeneVocab, model_input_size: int, chunk_size: int, obs_keys: Sequence[str], *, special_tokens: bool
) -> list[str]:
    minimum = 3 if special_tokens else 1
    if int(model_input_size) < minimum:
        msg = f"model_input_size must be >= {minimum}, got {model_input_size}"
        raise InputError(msg)
    if int(chunk_size) < 1:
        msg = f"chunk_size must be >= 1, got {chunk_size}"
        raise InputError(msg)
    if special_tokens and (vocab.cls_id is None or vocab.eos_id is None):
        msg = "special_tokens=True needs <cls> and <eos> in the vocabulary (V1 has neither)"
        raise InputError(msg)
    if not special_tokens and vocab.cls_id is not None and vocab.eos_id is not None:
        logger.warning("the vocabulary has <cls>/<eos> but special_tokens=False (V2 models expect them)")
    keys = [obs_keys] if isinstance(obs_keys, str) else list(obs_keys)
    clash = [k for k in keys if k in _RESERVED]
    if clash:
        msg = f"obs_keys {clash} clash with the dataset's own columns {list(_RESERVED)}"
        raise InputError(msg)
    return keys


def _with_symbols(vocab: GeneVocab, var: pd.DataFrame, plan: GenePlan, gene_id_key: str | None) -> GeneVocab:
    """A copy of ``vocab`` whose symbols also map this input's genes to its var_names."""
    if gene_id_key is None:
        return vocab
    names = np.asarray(var.index, dtype=object)
    ids = var[gene_id_key].astype(object).to_numpy()
    if np.array_equal(names, ids):
        return vocab
    symbols = dict(vocab.symbols)
    first = np.full(plan.tokens.size, -1, dtype=np.int64)
    src = np.flatnonzero(plan.colmap >= 0)
    # first input column of each vocabulary column
    for j in src[::-1]:
        first[plan.colmap[j]] = j
    for k, gid in enumerate(plan.gene_ids):
        symbols.setdefault(str(gid), str(names[first[k]]))
    return vocab.with_symbols(symbols)
