"""`extract`: one streaming pass over tokenized cells, all models on the same batches.

For each batch, every model runs its normal forward pass with the ``geneattn_stats`` attention
function (interface.py, Algorithm C); each layer's ``[B, H, L]`` token statistics are reduced on the
device into grouped running statistics (reduce.py) and only reduced arrays leave the device. No
``output_attentions``, no ``(batch, head, L, L)`` tensor for all layers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._classes import sort_classes
from .._progress import progress
from .._settings import settings
from ..errors import InputError
from ..models import load
from ..models._loop import autocast
from ..tokenize import load_tokens
from . import _accumulate as acc_mod
from .interface import collecting, encoder_layers
from .result import AttentionResult, TokenIndex
from .store import StoreFile, barrier, length_bin_edges, length_bins_of, open_store, store_batch

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

    from datasets import Dataset

    from ..tokenize import GeneVocab

__all__ = ["extract", "precision_context", "PRECISIONS"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def precision_context(
    precision: str, device: torch.device
) -> tuple[str, Callable[[], contextlib.AbstractContextManager[object]]]:
    """The precision the forward passes run in and a factory of its autocast context.

    Parameters
    ----------
    precision
        ``"auto"``: bf16 autocast on a CUDA device with bf16 support (as fine-tuning,
        `geneattn.models._loop.autocast`), else float32; ``"fp32"``; ``"bf16"``: bf16 autocast on
        CUDA (needs bf16 support) or on the CPU (torch's CPU autocast).
    device
        The device the models run on.

    Returns
    -------
    ``("fp32" | "bf16", factory)``; ``factory()`` is a fresh context manager for one forward pass.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return "fp32", contextlib.nullcontext
    if isinstance(autocast(device), torch.autocast):  # the fine-tuning rule says bf16 here
        return "bf16", functools.partial(autocast, device)
    if precision == "auto":
        return "fp32", contextlib.nullcontext
    if device.type != "cpu":
        raise InputError(f"precision 'bf16' needs the CPU or a CUDA device with bf16 support; got {device}")
    return "bf16", functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)


def _dataset(tokens: Dataset | str | os.PathLike[str]) -> Dataset:
    if isinstance(tokens, str | os.PathLike):
        path = Path(tokens)
        if not path.exists():
            msg = f"token dataset {path} not found"
            raise InputError(msg)
        return load_tokens(path)
    if not hasattr(tokens, "column_names") or "input_ids" not in tokens.column_names:
        msg = "tokens must be a datasets.Dataset (or its directory) with an 'input_ids' column"
        raise InputError(msg)
    return tokens


def _vocab_arrays(vocab: Any, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gene id and symbol per token id (``str(token_id)`` for both when ``vocab`` is None)."""
    if vocab is None:
        s = token_ids.astype(str)
        return s, s.copy()
    id_to_gene = np.asarray(vocab.id_to_gene)
    if token_ids.size and token_ids.max() >= len(id_to_gene):
        msg = f"token id {int(token_ids.max())} is outside the vocabulary (size {len(id_to_gene)})"
        raise InputError(msg)
    ens = id_to_gene[token_ids].astype(str)
    symbols = getattr(vocab, "symbols", None) or {}
    return ens, np.array([symbols.get(e, e) for e in ens], dtype=object).astype(str)


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def extract(
    models: Mapping[str, PreTrainedModel | str | os.PathLike[str]],
    tokens: Dataset | str | os.PathLike[str],
    vocab: GeneVocab | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    label_key: str | None = "label",
    device: str | None = None,
    length_bins: int = 10,
    store_tokens: bool = True,
    method: str = "fused",
    sort_by_length: bool = True,
    precision: str = "auto",
) -> AttentionResult:
    """Attention statistics of one or more models over the same tokenized cells.

    Parameters
    ----------
    models
        Name -> model (``BertModel``/``BertForMaskedLM``/``BertForSequenceClassification``) or local directory.
    tokens
        ``datasets.Dataset`` (or its directory) with ``input_ids``; optional ``length``, ``cell_id``, ``label_key``.
    vocab
        `GeneVocab` (``id_to_gene``, ``symbols``) to name genes; ``None``: gene = ``str(token_id)``.
    out
        Directory for the tables and token store (written atomically); ``None`` keeps everything in memory.
    batch_size
        Cells per forward pass.
    label_key
        Column with the class of each cell; absent or None -> only ``"__all__"`` (None: per-class
        tables are not wanted, e.g. many models at once; memory grows with the number of classes).
    device
        Torch device; default ``settings.resolved_device()``.
    length_bins
        Number of cell-length quantile bins for ``attention_by_position_length``.
    store_tokens
        Keep the per-token log fold store (``[n_tokens, n_layers, n_heads]`` float32 per model).
    method
        ``"fused"`` (Algorithm C, default) or ``"blocks"`` (explicit query blocks; reference).
    sort_by_length
        Batch cells of similar length together (less padding); results do not depend on it.
    precision
        ``"auto"`` (bf16 autocast on a CUDA device with bf16 support, else float32), ``"fp32"`` or
        ``"bf16"`` (bf16 autocast, CUDA or CPU); see `precision_context`. Only the model's own layers
        run in bf16: the attention statistics are computed and accumulated in float32 from the
        layer's bf16 queries, keys and values. The precision used is ``params["precision"]``.

    Returns
    -------
    `AttentionResult` with the five tables; see `geneattn.attention` for the columns.
    Under ``torch.distributed`` each process takes every ``world_size``-th batch and the statistics
    are all-reduced; every process returns the full result and rank 0 writes ``out``.
    """
    _check_args(models, batch_size, length_bins)
    ds = _dataset(tokens)
    dev = torch.device(device or settings.resolved_device())
    used_precision, amp = precision_context(precision, dev)
    loaded = {n: (load(m, vocab=vocab) if isinstance(m, str | os.PathLike) else m) for n, m in models.items()}
    cells = _prepare_cells(ds, vocab, label_key, length_bins)
    shapes = _model_shapes(loaded, cells, dev)
    max_len, n_cells = int(cells.lengths.max()), len(cells.lengths)
    accs = {
        n: acc_mod.ModelAccumulator(
            nl, nh, len(cells.gene_tokens), len(cells.classes), max_len, length_bins, dev, n_cells=n_cells
        )  # fmt: skip
        for n, (nl, nh) in shapes.items()
    }
    rank, world = _dist()
    out_path = Path(out) if out is not None else None
    store = open_store(out_path, shapes, int(cells.offsets[-1]), rank, world) if store_tokens else {}
    logger.info("attention: %d cells, %d genes, models %s on %s (%s, %s, %d process(es))",
                n_cells, len(cells.gene_tokens), list(loaded), dev, method, used_precision, world)  # fmt: skip
    order = np.argsort(-cells.lengths, kind="stable") if sort_by_length else np.arange(n_cells)
    batches = [order[s : s + batch_size] for s in range(0, n_cells, batch_size)][rank::world]
    pad_id = int(getattr(vocab, "pad_id", 0) or 0)
    with progress(n_cells // world, desc="attention", unit="cell", enabled=rank == 0) as bar:
        for rows in batches:
            _run_batch(
                np.sort(rows), cells, loaded, accs, store, pad_id=pad_id, device=dev, method=method, amp=amp
            )
            bar.update(len(rows))
    params = dict(batch_size=batch_size, label_key=label_key, length_bins=length_bins, method=method,
                  length_bin_edges=cells.edges.tolist(), n_cells=n_cells, classes=cells.classes, device=str(dev),
                  precision=used_precision)  # fmt: skip
    return _finish(accs, loaded, store, out_path, cells, params)


def _check_args(models: Mapping[str, object], batch_size: int, length_bins: int) -> None:
    if not models:
        raise InputError("no models given")
    if batch_size < 1 or length_bins < 1:
        raise InputError("batch_size and length_bins must be >= 1")
    names = [str(n) for n in models]
    if any(not n or "/" in n for n in names):
        raise InputError(f"model names must be non-empty and contain no '/': {names}")


def _model_shapes(
    loaded: Mapping[str, PreTrainedModel], cells: _Cells, dev: torch.device
) -> dict[str, tuple[int, int]]:
    """``(n_layers, n_heads)`` of each model, after checking it can read the cells; models moved to ``dev``."""
    max_len, max_id = int(cells.lengths.max()), int(cells.gene_tokens.max())
    shapes = {}
    for n, m in loaded.items():
        layers = encoder_layers(m)
        if m.config.max_position_embeddings < max_len:
            raise InputError(
                f"model {n!r} takes at most {m.config.max_position_embeddings} tokens; cells have {max_len}"
            )
        if max_id >= m.config.vocab_size:
            raise InputError(f"token id {max_id} >= vocabulary size {m.config.vocab_size} of model {n!r}: "
                             "tokens and model use different vocabularies")  # fmt: skip
        shapes[n] = (len(layers), layers[0].attention.self.num_attention_heads)
        m.eval().to(dev)
    return shapes


def _run_batch(rows: np.ndarray, cells: _Cells, loaded: Mapping[str, PreTrainedModel],
               accs: Mapping[str, acc_mod.ModelAccumulator], store: Mapping[str, np.ndarray | StoreFile], *,
               pad_id: int, device: torch.device, method: str,
               amp: Callable[[], contextlib.AbstractContextManager[object]]) -> None:  # fmt: skip
    """Every model's forward pass over the cells ``rows`` (dataset rows, sorted), accumulated and stored.

    ``amp()`` is the autocast context of the forward pass only; `ModelAccumulator.update` runs outside it.
    """
    lens = cells.lengths[rows]
    width = int(lens.max())
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    valid_np = np.arange(width)[None, :] < lens[:, None]  # [batch, width]
    ids[valid_np] = cells.ids.of(rows)
    gidx = np.where(valid_np, cells.lut[ids.clip(0, len(cells.lut) - 1)], 0)  # compact gene index per token
    input_ids, valid = torch.from_numpy(ids).to(device), torch.from_numpy(valid_np).to(device)
    g_t, c_t = torch.from_numpy(gidx).to(device), torch.from_numpy(cells.class_idx[rows]).to(device)
    b_t = torch.from_numpy(cells.bin_idx[rows].astype(np.int64)).to(device)
    for name, model in loaded.items():
        acc = accs[name]
        with torch.inference_mode(), collecting(model, acc.sink, method=method):
            acc.begin(valid)
            base = getattr(model, getattr(model, "base_model_prefix", "bert"), model)
            with amp():
                base(input_ids=input_ids, attention_mask=valid.long())
            lf = acc.update(g_t, c_t, b_t, rows)
        if name in store:
            store_batch(store[name], lf.cpu().numpy(), cells.offsets[rows], lens)


@dataclass
class _Cells:
    """Per-cell arrays of the token dataset, read once before the pass (no per-token Python work)."""

    lengths: np.ndarray  # [n_cells] number of tokens
    ids: _TokenIds  # token ids per cell, read from the Arrow column on demand
    offsets: np.ndarray  # [n_cells + 1]
    gene_tokens: np.ndarray  # sorted token ids present (compact gene index -> token id)
    lut: np.ndarray  # token id -> compact gene index (-1 absent)
    ens: np.ndarray  # gene id per compact index
    sym: np.ndarray  # symbol per compact index
    cell_ids: np.ndarray
    labels: np.ndarray
    classes: list[str]
    class_idx: np.ndarray
    edges: np.ndarray  # length-bin edges
    bin_idx: np.ndarray


class _TokenIds:
    """Token ids of any dataset row, as zero-copy views of the chunks of the Arrow ``input_ids`` column.

    Parameters
    ----------
    column
        ``pyarrow.ChunkedArray`` of lists of integer token ids, one list per cell.
    """

    def __init__(self, column: Any) -> None:
        chunks = [c for c in column.chunks if len(c)]
        self.values = [c.values.to_numpy(zero_copy_only=False) for c in chunks]
        self.offsets = [c.offsets.to_numpy(zero_copy_only=False).astype(np.int64) for c in chunks]
        self.starts = np.cumsum([0] + [len(c) for c in chunks])

    def of(self, rows: np.ndarray) -> np.ndarray:
        """Concatenated int32 token ids of dataset rows ``rows`` (in the given order)."""
        chunk = np.searchsorted(self.starts, rows, side="right") - 1
        parts = []
        for r, k in zip(rows.tolist(), chunk.tolist(), strict=True):
            off = self.offsets[k]
            parts.append(self.values[k][off[r - self.starts[k]] : off[r - self.starts[k] + 1]])
        return np.concatenate(parts).astype(np.int32, copy=False)

    def blocks(self, size: int = 1 << 20) -> Iterator[np.ndarray]:
        """All token ids in dataset order, in int32 blocks of at most ``size`` tokens."""
        for values, off in zip(self.values, self.offsets, strict=True):
            for lo in range(int(off[0]), int(off[-1]), size):
                yield values[lo : min(lo + size, int(off[-1]))].astype(np.int32)

    def present(self) -> np.ndarray:
        """Sorted distinct token ids (int32), from one chunked pass (O(vocabulary) memory)."""
        seen = np.zeros(0, bool)
        for block in self.blocks():
            if block.min() < 0:
                raise InputError(f"negative token id {int(block.min())} in input_ids")
            if block.max() >= len(seen):
                seen = np.concatenate([seen, np.zeros(int(block.max()) + 1 - len(seen), bool)])
            seen[block] = True
        return np.flatnonzero(seen).astype(np.int32)

    def all(self) -> np.ndarray:
        """``[n_tokens]`` int32 token ids of every cell in dataset order (for ``token_index.npz``)."""
        out = np.empty(sum(int(o[-1] - o[0]) for o in self.offsets), np.int32)
        pos = 0
        for block in self.blocks():
            out[pos : pos + len(block)] = block
            pos += len(block)
        return out


def _prepare_cells(ds: Any, vocab: Any, label_key: str | None, length_bins: int) -> _Cells:
    """Per-cell arrays (lengths, offsets, labels, length bins) and the gene index of ``ds``.

    Token ids are not materialised: `_TokenIds` reads them per batch, so memory is O(n_cells + vocabulary).
    """
    import pyarrow.compute as pc

    ids_col = (ds.flatten_indices() if getattr(ds, "_indices", None) is not None else ds).data.column(
        "input_ids"
    )
    lengths = pc.list_value_length(ids_col).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(lengths) == 0 or lengths.min() < 1:
        raise InputError("the token dataset is empty or has cells without tokens")
    ids = _TokenIds(ids_col)
    gene_tokens = ids.present()
    lut = np.full(int(gene_tokens.max()) + 1, -1, dtype=np.int64)
    lut[gene_tokens] = np.arange(len(gene_tokens))
    ens, sym = _vocab_arrays(vocab, gene_tokens)
    n_cells, cols = len(lengths), ds.column_names
    cell_ids = np.asarray(ds["cell_id"], dtype=str) if "cell_id" in cols else np.arange(n_cells).astype(str)
    if label_key is not None and label_key in cols:
        labels = np.asarray([str(x) for x in ds[label_key]])
        classes = sort_classes(labels.tolist())
    else:
        if label_key is not None:
            logger.info("no %r column: statistics over all cells only", label_key)
        labels, classes = np.full(n_cells, "__all__"), ["__all__"]
    class_of = {c: i for i, c in enumerate(classes)}
    class_idx = np.array([class_of[x] for x in labels], dtype=np.int64)
    bin_source = np.asarray(ds["length"], dtype=np.int64) if "length" in cols else lengths
    edges = length_bin_edges(bin_source, length_bins)
    bin_idx = length_bins_of(bin_source, edges)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return _Cells(
        lengths,
        ids,
        offsets,
        gene_tokens,
        lut,
        ens,
        sym,
        cell_ids,
        labels,
        classes,
        class_idx,
        edges,
        bin_idx,
    )


def _finish(
    accs: dict, loaded: dict, store: dict, out: Path | None, cells: _Cells, params: dict
) -> AttentionResult:
    rank, world = _dist()
    tables: dict[str, list] = {k: [] for k in ("gene", "pos", "poslen", "head", "cell")}
    for name, acc in accs.items():
        acc.all_reduce()
        tables["gene"].append(
            acc_mod.gene_table(acc, name, cells.classes, cells.gene_tokens, cells.ens, cells.sym)
        )
        tables["pos"].append(acc_mod.position_table(acc, name, cells.classes))
        tables["poslen"].append(acc_mod.position_length_table(acc, name))
        tables["head"].append(acc_mod.head_table(acc, name))
        tables["cell"].append(
            acc_mod.cell_table(acc, name, cells.cell_ids, cells.labels, cells.lengths, models=list(accs))
        )
    import pandas as pd

    cat = {k: pd.concat(tables.pop(k), ignore_index=True) for k in list(tables)}  # parts freed one by one
    result_tables = {
        "attention_by_gene": cat["gene"],
        "attention_by_position": cat["pos"],
        "attention_by_position_length": cat["poslen"],
        "head_norms": cat["head"],
        "cell_head": cat["cell"],
    }
    params["models"] = {n: str(getattr(m, "name_or_path", "") or "") for n, m in loaded.items()}
    # token_ids are not materialised: written to token_index.npz block by block, read back on first access
    token_index: Any = (
        TokenIndex(cells.offsets, cells.cell_ids, int(cells.offsets[-1]), blocks=cells.ids.blocks)
        if store
        else {}
    )
    barrier(world)
    if out is not None and store:
        for n, arr in list(store.items()):
            arr.close()
            final = out / f"token_logfold_{n}.npy"
            if rank == 0:
                arr.path.replace(final)
            barrier(world)
            store[n] = np.load(final, mmap_mode="r")
    result = AttentionResult(result_tables, params, store, token_index)
    if out is not None and rank == 0:
        result.save(out)
        if isinstance(token_index, TokenIndex):
            token_index.use_file(out / "token_index.npz")
    return result
