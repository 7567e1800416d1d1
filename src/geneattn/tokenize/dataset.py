"""AnnData (in memory, backed, or an ``.h5ad`` path) -> tokenized `datasets.Dataset` on disk.

Rows are read in chunks (backed files are never loaded whole), mapped onto the vocabulary,
rank-value encoded and appended to Arrow IPC stream shards, so peak memory depends on the chunk
size, not on the number of cells. The output directory is the layout ``Dataset.save_to_disk``
writes (``data-XXXXX-of-XXXXX.arrow``, ``dataset_info.json``, ``state.json``) plus geneattn's
``vocab.json`` and ``tokenize.json``; ``datasets.load_from_disk`` reads it (it only opens the
files listed in ``state.json``), and so does Geneformer.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from .. import _keys
from .._atomic import atomic_dir, write_json
from .._settings import settings
from ..errors import InputError
from ._genes import plan_genes, remap_chunk
from .rank_value import encode
from .vocab import GeneVocab, _gene_ids, _obs_n_counts

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

    import datasets

__all__ = ["tokenize", "load_tokens", "load_vocab", "VOCAB_FILE", "PARAMS_FILE"]

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"
PARAMS_FILE = "tokenize.json"
_RESERVED = (_keys.INPUT_IDS, _keys.LENGTH, _keys.CELL_ID)
_MAX_SHARD_BYTES = 500 * 2**20  # save_to_disk's default


def tokenize(
    data: AnnData | str | os.PathLike[str],
    vocab: GeneVocab,
    *,
    out: str | os.PathLike[str] | None = None,
    model_input_size: int = 2048,
    special_tokens: bool = False,
    obs_keys: Sequence[str] = (),
    chunk_size: int = 512,
    gene_id_key: str | None = "ensembl_id",
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
        Raw counts: an AnnData (in memory or backed) or an ``.h5ad`` path (opened backed,
        read-only; the file is never modified).
    vocab
        Geneformer's dictionaries (`GeneVocab.from_geneformer`) or a built vocabulary.
    out
        Directory to write (atomically) with ``save_to_disk``'s layout plus ``vocab.json`` and
        ``tokenize.json``. ``None`` returns an in-memory dataset.
    model_input_size
        Maximum length, special tokens included (Geneformer V1: 2048; V2: 4096).
    special_tokens
        Add ``<cls>`` first and ``<eos>`` last (V2). The vocabulary must have both.
    obs_keys
        ``obs`` columns copied to the dataset (same names).
    chunk_size
        Cells per chunk (bounds memory).
    gene_id_key
        ``var`` column with gene ids; ``None`` uses ``var_names``.
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
    obs_keys = _check_params(vocab, model_input_size, chunk_size, obs_keys, special_tokens=special_tokens)
    out_path = _check_out(out)
    with contextlib.ExitStack() as stack:
        adata, close = _open_input(data)
        stack.callback(close)
        missing = [k for k in obs_keys if k not in adata.obs.columns]
        if missing:
            msg = f"obs has no column(s) {missing} (columns: {list(adata.obs.columns)})"
            raise InputError(msg)
        ids, _ = _gene_ids(adata, gene_id_key)
        plan = plan_genes(ids, vocab, collapse_gene_ids=collapse_gene_ids)
        _check_coverage(ids, plan, min_gene_fraction)
        n_counts = _checked_n_counts(adata, n_counts_key)
        passing = _filter_pass(adata, filter_key)
        columns = _static_columns(adata, obs_keys)
        tmp = stack.enter_context(atomic_dir(out_path)) if out_path is not None else None
        sink = _Sink(_schema(columns), tmp)
        stack.callback(sink.close)
        cls_id, eos_id = (vocab.cls_id, vocab.eos_id) if special_tokens else (None, None)
        work = functools.partial(
            _encode_chunk,
            plan=plan,
            n_counts=n_counts,
            passing=passing,
            model_input_size=model_input_size,
            cls_id=cls_id,
            eos_id=eos_id,
        )
        n_empty = 0
        n_workers = _n_workers(n_jobs)
        # numpy's sorts release the GIL: chunks are encoded by worker threads while the main
        # thread reads the next chunks and writes finished ones in input order (bounded queue)
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=n_workers))
        if out_path is not None:  # serialise the vocabulary while chunks are encoded
            pool.submit(lambda: (vocab.fingerprint, vocab._core_json))
        pending: deque[Future[Any]] = deque()
        bar = stack.enter_context(
            tqdm(total=adata.n_obs, desc="tokenize", unit="cell", disable=not settings.progress)
        )

        def drain(limit: int) -> None:
            nonlocal n_empty
            while len(pending) > limit:
                result = pending.popleft().result()
                if result is not None:
                    flat, offsets, rows, empty = result
                    n_empty += empty
                    if rows.size:
                        sink.add(flat, offsets, rows, columns)

        for start, x in _row_chunks(adata, chunk_size):
            pending.append(pool.submit(work, start, x))
            bar.update(x.shape[0])
            drain(n_workers)
        drain(0)
        if n_empty:
            logger.warning("dropped %d cells that express no vocabulary gene (empty droplets?)", n_empty)
        if sink.n_rows == 0:
            msg = "no cell left to tokenize (none passes filter_pass or expresses a vocabulary gene)"
            raise InputError(msg)
        params = {
            "model_input_size": int(model_input_size),
            "special_tokens": bool(special_tokens),
            "obs_keys": list(obs_keys),
            "chunk_size": int(chunk_size),
            "gene_id_key": gene_id_key,
            "collapse_gene_ids": bool(collapse_gene_ids),
            "n_counts_key": n_counts_key,
            "n_counts_source": "obs" if n_counts is not None else "row_sums",
            "filter_key": filter_key if filter_key in adata.obs.columns else None,
            "vocab_fingerprint": vocab.fingerprint,
            "vocab_size": vocab.size,
            "gene_path": plan.path,
            "n_genes_in": len(ids),
            "n_genes_mapped": int((plan.colmap >= 0).sum()),
            "n_vocab_columns": int(plan.tokens.size),
            "n_summed_groups": int(plan.n_summed_groups),
            "n_cells_in": int(adata.n_obs),
            "n_cells_filtered_out": int(adata.n_obs - passing.sum()),
            "n_cells_empty": n_empty,
            "n_cells_out": int(sink.n_rows),
            "input": str(data) if isinstance(data, str | os.PathLike) else "AnnData",
            "token_dtype": "int32",
        }
        if not isinstance(data, str | os.PathLike) and not data.isbacked and not data.is_view:
            data.uns["tokenize"] = {"params": {k: v for k, v in params.items() if v is not None}}
        params["seconds"] = round(time.perf_counter() - t0, 3)
        if tmp is None:
            return sink.to_dataset()
        sink.finish(_with_symbols(vocab, adata, plan, gene_id_key), params)
    logger.info("tokenized %d cells -> %s (%.1f s)", params["n_cells_out"], out_path, params["seconds"])
    return load_tokens(out_path)


def _encode_chunk(
    start: int,
    x: sp.csr_matrix,
    *,
    plan: Any,
    n_counts: np.ndarray | None,
    passing: np.ndarray,
    model_input_size: int,
    cls_id: int | None,
    eos_id: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Encode one chunk of rows: (tokens, offsets, input row numbers, n empty cells dropped)."""
    _check_values(x, start)
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
        n,
        plan.tokens,
        plan.recip_medians,
        model_input_size=model_input_size,
        cls_id=cls_id,
        eos_id=eos_id,
    )
    return flat, offsets, rows, n_empty


def _check_values(x: sp.csr_matrix, start: int) -> None:
    """InputError unless the chunk holds raw counts (finite, non-negative integers)."""
    v = x.data
    if v.size == 0 or np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.bool_):
        if v.size and np.issubdtype(v.dtype, np.signedinteger) and v.min() < 0:
            msg = f"X has negative values (rows from {start}); tokenize raw integer UMI counts"
            raise InputError(msg)
        return
    if not np.issubdtype(v.dtype, np.floating):
        msg = f"X has dtype {v.dtype}; tokenize raw integer UMI counts"
        raise InputError(msg)
    if not np.isfinite(v).all():
        msg = f"X has NaN or infinite values (rows from {start}); tokenize raw integer UMI counts"
        raise InputError(msg)
    if v.min() < 0:
        msg = f"X has negative values (rows from {start}): scaled data? tokenize raw integer UMI counts"
        raise InputError(msg)
    if (np.abs(v - np.round(v)) > 1e-3).any():
        msg = (
            f"X has non-integer values (rows from {start}, max {float(v.max()):.3g}): log-normalised data? "
            "tokenize raw integer UMI counts (e.g. a 'counts' layer or adata.raw)"
        )
        raise InputError(msg)


def _check_coverage(ids: np.ndarray, plan: Any, min_fraction: float) -> None:
    """InputError when too few input gene ids map to the vocabulary (wrong ids or dictionaries)."""
    n_in = len(ids)
    n_mapped = int((plan.colmap >= 0).sum())
    frac = n_mapped / max(n_in, 1)
    if frac >= 0.5:
        return
    unmapped = [str(i) for i, c in zip(ids, plan.colmap, strict=True) if c < 0][:3]
    what = f"only {n_mapped} of {n_in} gene ids ({frac:.0%}) map to the vocabulary (unmapped e.g. {unmapped})"
    if frac < min_fraction:
        msg = (
            f"{what}: the gene ids are probably not Ensembl ids of this vocabulary's species, or the "
            "dictionaries do not match; pass the right gene id column (--gene-id-key) or dictionaries"
        )
        raise InputError(msg)
    logger.warning("%s; check the gene id column and the dictionaries", what)


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


# ---------------------------------------------------------------------- input


def _open_input(data: Any) -> tuple[AnnData, Callable[[], None]]:
    """An AnnData and a function that closes it (backed-opened paths only)."""
    import anndata

    if isinstance(data, anndata.AnnData):
        return data, lambda: None
    if not isinstance(data, str | os.PathLike):
        msg = f"expected an AnnData or an .h5ad path, got {type(data).__name__}"
        raise InputError(msg)
    path = Path(data)
    if not path.is_file():
        msg = f"input file not found: {path}"
        raise InputError(msg)
    try:
        adata = anndata.read_h5ad(path, backed="r")
    except Exception as e:  # noqa: BLE001 - any reader failure means an unreadable file
        msg = f"cannot read {path} as .h5ad ({type(e).__name__}: {e})"
        raise InputError(msg) from None

    def close() -> None:
        adata.file.close()

    return adata, close


def _row_chunks(adata: AnnData, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield ``(first_row, CSR chunk)`` over all rows; reads backed files chunk by chunk."""
    X = adata.X
    if X is None:
        msg = "the AnnData has no X matrix (raw counts are needed)"
        raise InputError(msg)
    group = _backed_csr_group(adata)
    if group is not None:  # read the CSR arrays directly: anndata's slicing has per-call overhead
        data, indices, indptr_ds = group["data"], group["indices"], group["indptr"]
        n_vars = adata.n_vars
        for start in range(0, adata.n_obs, chunk_size):
            indptr = np.asarray(indptr_ds[start : start + chunk_size + 1], dtype=np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            x = sp.csr_matrix(
                (data[lo:hi], indices[lo:hi], indptr - lo), shape=(indptr.size - 1, n_vars), copy=False
            )
            yield start, x
        return
    if not adata.isbacked and sp.issparse(X) and X.format != "csr":
        X = sp.csr_matrix(X)  # one conversion; row slicing of CSC is slow
    for start in range(0, adata.n_obs, chunk_size):
        x = X[start : start + chunk_size]
        x = x if isinstance(x, sp.csr_matrix) else sp.csr_matrix(x)
        yield start, x


def _backed_csr_group(adata: AnnData) -> Any:
    """The h5py group of a backed CSR ``X`` (whole file, not a view), else None."""
    if not adata.isbacked or adata.is_view:
        return None
    try:
        group = adata.file["X"]
        if dict(group.attrs).get("encoding-type") != "csr_matrix":
            return None
        if tuple(group.attrs["shape"]) != (adata.n_obs, adata.n_vars):
            return None
    except (KeyError, TypeError, AttributeError):
        return None
    return group


def _checked_n_counts(adata: AnnData, key: str) -> np.ndarray | None:
    n = _obs_n_counts(adata, key)
    if n is None:
        logger.warning(
            "obs has no %r column: using row sums of X as total counts (Geneformer requires it)", key
        )
        return None
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        bad = int((~np.isfinite(n) | (n <= 0)).sum())
        msg = f"obs[{key!r}] has {bad} non-positive or missing values; total counts must be > 0"
        raise InputError(msg)
    return n


def _row_sums(x: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    sums = np.asarray(x.sum(axis=1, dtype=np.float64)).ravel()
    if np.issubdtype(x.dtype, np.floating):
        sums = sums.astype(x.dtype)  # as `X.sum(1)` would store it in obs
    if np.any(sums <= 0):
        msg = f"{int((sums <= 0).sum())} cells have zero total counts (rows near {int(rows[0])})"
        raise InputError(msg)
    return sums


def _filter_pass(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obs.columns:
        logger.info("obs has no %r column: tokenizing all cells", key)
        return np.ones(adata.n_obs, dtype=bool)
    values = adata.obs[key].to_numpy()
    return np.asarray(values == 1, dtype=bool)  # Geneformer keeps cells with `i == 1`


# ---------------------------------------------------------------------- output


def _check_params(
    vocab: GeneVocab, model_input_size: int, chunk_size: int, obs_keys: Sequence[str], *, special_tokens: bool
) -> list[str]:
    if not isinstance(vocab, GeneVocab):
        msg = f"vocab must be a GeneVocab, got {type(vocab).__name__}"
        raise InputError(msg)
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


def _check_out(out: str | os.PathLike[str] | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            msg = f"output {path} exists and is not a directory"
            raise InputError(msg)
        if any(path.iterdir()) and not (path / PARAMS_FILE).is_file():
            msg = f"output {path} is a non-empty directory not written by geneattn tokenize; choose another"
            raise InputError(msg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"cannot create output directory {path.parent}: {e.strerror or e}"
        raise InputError(msg) from None
    if not os.access(path.parent, os.W_OK):
        msg = f"output directory {path.parent} is not writable"
        raise InputError(msg)
    return path


def _obs_arrow(series: pd.Series) -> pa.Array:
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = series.cat.categories
        series = series.astype(object if cats.dtype == object else cats.dtype)
    try:
        arr = pa.Array.from_pandas(series)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        arr = pa.array(series.astype(str).tolist(), type=pa.string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _static_columns(adata: AnnData, obs_keys: list[str]) -> dict[str, pa.Array]:
    cols = {_keys.CELL_ID: pa.array(adata.obs_names.astype(str).to_numpy(dtype=object), type=pa.string())}
    for k in obs_keys:
        cols[k] = _obs_arrow(adata.obs[k].reset_index(drop=True))
    return cols


def _schema(columns: dict[str, pa.Array]) -> pa.Schema:
    import datasets

    fields = [
        pa.field(_keys.INPUT_IDS, pa.list_(pa.int32())),
        pa.field(_keys.LENGTH, pa.int64()),
        *(pa.field(k, v.type) for k, v in columns.items()),
    ]
    # datasets' schema carries the "huggingface" features metadata load_from_disk expects
    return datasets.Features.from_arrow_schema(pa.schema(fields)).arrow_schema


class _Sink:
    """Collects record batches in memory, or streams them into Arrow shards of ``directory``."""

    def __init__(self, schema: pa.Schema, directory: Path | None) -> None:
        self.schema = schema
        self.directory = directory
        self.batches: list[pa.RecordBatch] = []
        self.shards: list[Path] = []
        self.writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.shard_bytes = 0
        self.n_rows = 0

    def add(
        self, flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray, columns: dict[str, pa.Array]
    ) -> None:
        """Append cells ``rows`` (input row numbers) with tokens ``flat``/``offsets``."""
        ids = pa.ListArray.from_arrays(
            pa.array(offsets.astype(np.int32)), pa.array(flat.astype(np.int32, copy=False))
        )
        take = pa.array(rows)
        arrays = [ids, pa.array(np.diff(offsets).astype(np.int64))]
        arrays += [columns[name].take(take) for name in self.schema.names[2:]]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self.n_rows += batch.num_rows
        if self.directory is None:
            self.batches.append(batch)
            return
        if self.writer is None or self.shard_bytes > _MAX_SHARD_BYTES:
            self.close()
            self.shards.append(self.directory / f"shard-{len(self.shards):05d}.arrow")
            self.writer = pa.ipc.new_stream(str(self.shards[-1]), self.schema)
            self.shard_bytes = 0
        self.writer.write_batch(batch)
        self.shard_bytes += batch.nbytes

    def close(self) -> None:
        """Close the open shard, if any."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def to_dataset(self) -> datasets.Dataset:
        """The collected batches as an in-memory dataset."""
        from datasets.table import InMemoryTable

        import datasets

        table = pa.Table.from_batches(self.batches, schema=self.schema)
        features = datasets.Features.from_arrow_schema(self.schema)
        return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=features))

    def finish(self, vocab: GeneVocab, params: dict[str, Any]) -> None:
        """Name the shards as save_to_disk does and write its json files plus ours."""
        import datasets

        self.close()
        if self.directory is None:  # pragma: no cover - internal misuse
            msg = "finish() needs an output directory"
            raise RuntimeError(msg)
        names = []
        for i, shard in enumerate(self.shards):
            name = f"data-{i:05d}-of-{len(self.shards):05d}.arrow"
            shard.rename(self.directory / name)
            names.append(name)
        features = datasets.Features.from_arrow_schema(self.schema)
        info = {
            "citation": "",
            "description": "",
            "features": features.to_dict(),
            "homepage": "",
            "license": "",
        }
        state = {
            "_data_files": [{"filename": n} for n in names],
            "_fingerprint": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        write_json(self.directory / "dataset_info.json", info)
        write_json(self.directory / "state.json", state)
        vocab.to_json(self.directory / VOCAB_FILE)
        write_json(self.directory / PARAMS_FILE, params)


def _with_symbols(vocab: GeneVocab, adata: AnnData, plan: Any, gene_id_key: str | None) -> GeneVocab:
    """A copy of ``vocab`` whose symbols also map this input's genes to its var_names."""
    if gene_id_key is None:
        return vocab
    names = np.asarray(adata.var_names, dtype=object)
    ids = adata.var[gene_id_key].astype(object).to_numpy()
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
