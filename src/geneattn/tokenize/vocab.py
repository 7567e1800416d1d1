"""Gene vocabularies: token ids, gene medians, the id-collapsing map and gene symbols.

A `GeneVocab` is either Geneformer's (three pickled dictionaries, read with a restricted
unpickler that can only rebuild numpy scalars) or built from a corpus with `build_vocab`
(medians of the nonzero normalised expression, as Geneformer's were made). Either way it is
saved as JSON beside the tokens it produced.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import write_text
from ..errors import InputError, one_line
from ._input import gene_ids, obs_n_counts, open_input, row_chunks

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

__all__ = [
    "GeneVocab",
    "build_vocab",
    "load_pickle",
    "SPECIAL_TOKENS",
    "PAD",
    "MASK",
    "CLS",
    "EOS",
]

logger = logging.getLogger(__name__)

PAD, MASK, CLS, EOS = "<pad>", "<mask>", "<cls>", "<eos>"
SPECIAL_TOKENS = (PAD, MASK, CLS, EOS)
_JSON_FORMAT = "geneattn.vocab"
_JSON_VERSION = 1

# the only globals Geneformer's dictionaries reference (numpy scalars; SOURCE.md)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy scalars and nothing else (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            msg = (
                f"refusing to load global '{module}.{name}' from a pickle: only numpy scalars "
                "are allowed in gene dictionaries"
            )
            raise InputError(msg)
        if name == "dtype":
            return np.dtype
        try:  # numpy >= 2 keeps the implementation in numpy._core
            from numpy._core.multiarray import scalar
        except ImportError:  # pragma: no cover - numpy < 2
            from numpy.core.multiarray import scalar  # type: ignore[no-redef]
        return scalar


def load_pickle(path: str | os.PathLike[str]) -> dict[object, object]:
    """Load a Geneformer dictionary pickle safely.

    Parameters
    ----------
    path
        A ``.pkl`` file holding one ``dict`` (token, median or mapping dictionary).

    Returns
    -------
    The dictionary, with numpy scalar values as stored.

    Raises
    ------
    InputError
        If the file is missing or unreadable, is not a dict, or references any global other
        than numpy scalars (a crafted pickle is refused before anything in it runs).
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(f).load()
    except InputError as e:
        msg = f"{path}: {e}"
        raise InputError(msg) from None
    except OSError as e:
        msg = f"cannot read dictionary {path}: {e.strerror or e}"
        raise InputError(msg) from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        msg = f"{path} is not a readable pickle ({type(e).__name__}: {one_line(e)})"
        raise InputError(msg) from e
    if not isinstance(obj, dict):
        msg = f"{path} holds a {type(obj).__name__}, expected a dict"
        raise InputError(msg)
    return obj


def _str_keys(d: dict[Any, Any], what: str) -> None:
    bad = [k for k in d if not isinstance(k, str)]
    if bad:
        msg = f"{what}: keys must be strings, found {bad[0]!r}"
        raise InputError(msg)


@dataclass
class GeneVocab:
    """Token ids, gene medians, the gene-id mapping and gene symbols of a Geneformer vocabulary.

    Attributes
    ----------
    token_ids
        Gene id (upper-case Ensembl id) or special token (``<pad>``, ``<mask>``, ``<cls>``,
        ``<eos>``) -> token id.
    medians
        Gene id -> nonzero median of normalised expression (the divisor in rank-value encoding).
        Must cover every gene in `token_ids`.
    mapping
        Upper-case gene id, symbol or alias -> gene id in `token_ids` (Geneformer's
        ``ensembl_mapping_dict``), filtered to values in the vocabulary. ``None`` means the
        identity over the vocabulary's genes.
    symbols
        Gene id -> gene symbol (may be empty); filled from ``var_names`` by `tokenize`.
    """

    token_ids: dict[str, int]
    medians: dict[str, float]
    mapping: dict[str, str] | None = None
    symbols: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _str_keys(self.token_ids, "token dictionary")
        try:
            self.token_ids = {k: int(v) for k, v in self.token_ids.items()}
            self.medians = {str(k): float(v) for k, v in self.medians.items()}
        except (TypeError, ValueError) as e:
            msg = f"token ids must be integers and medians numbers ({one_line(e)})"
            raise InputError(msg) from None
        for special in (PAD, MASK):
            if special not in self.token_ids:
                msg = f"the token dictionary has no {special} token"
                raise InputError(msg)
        ids = np.fromiter(self.token_ids.values(), dtype=np.int64, count=len(self.token_ids))
        if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
            msg = "token ids must be distinct non-negative integers"
            raise InputError(msg)
        missing = [g for g in self.genes if g not in self.medians]
        if missing:
            msg = (
                f"{len(missing)} vocabulary genes have no median (e.g. {missing[0]}); "
                "use the median dictionary that belongs to this token dictionary"
            )
            raise InputError(msg)
        bad = [g for g in self.genes if not (np.isfinite(self.medians[g]) and self.medians[g] > 0)]
        if bad:
            msg = f"{len(bad)} gene medians are not positive finite numbers (e.g. {bad[0]})"
            raise InputError(msg)
        if self.mapping is not None:
            _str_keys(self.mapping, "mapping dictionary")
            # as Geneformer: keep only entries whose value is a vocabulary gene
            genes = set(self.genes)
            self.mapping = {k: v for k, v in self.mapping.items() if v in genes}
        self.symbols = {str(k): str(v) for k, v in self.symbols.items()}

    # ------------------------------------------------------------------ properties
    @property
    def genes(self) -> list[str]:
        """Gene ids of the vocabulary (token keys that are not special tokens), in token order."""
        return [k for k in self.token_ids if k not in SPECIAL_TOKENS]

    @functools.cached_property
    def gene_set(self) -> frozenset[str]:
        """The gene ids of the vocabulary, as a set (cached)."""
        return frozenset(self.genes)

    @functools.cached_property
    def effective_mapping(self) -> dict[str, str]:
        """The mapping, or the identity over the genes when there is none (cached)."""
        return self.mapping if self.mapping is not None else {g: g for g in self.genes}

    @property
    def size(self) -> int:
        """Number of token ids (max id + 1): the model's ``vocab_size``."""
        return max(self.token_ids.values()) + 1

    @property
    def pad_id(self) -> int:
        """Token id of ``<pad>``."""
        return self.token_ids[PAD]

    @property
    def mask_id(self) -> int:
        """Token id of ``<mask>``."""
        return self.token_ids[MASK]

    @property
    def cls_id(self) -> int | None:
        """Token id of ``<cls>``, or ``None`` if the vocabulary has none (V1)."""
        return self.token_ids.get(CLS)

    @property
    def eos_id(self) -> int | None:
        """Token id of ``<eos>``, or ``None`` if the vocabulary has none (V1)."""
        return self.token_ids.get(EOS)

    @functools.cached_property
    def id_to_gene(self) -> np.ndarray:
        """Array of length `size`: token id -> gene id or special token (``""`` for unused ids)."""
        names = np.full(self.size, "", dtype=object)
        for k, v in self.token_ids.items():
            names[v] = k
        return names.astype(str)

    @functools.cached_property
    def core_json(self) -> str:
        """JSON of token ids, medians and mapping, in insertion order (the body of `to_json`; cached)."""
        return ",".join(
            f'"{name}":' + json.dumps(getattr(self, name), separators=(",", ":"))
            for name in ("token_ids", "medians", "mapping")
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 hex digest of token ids, medians and mapping (symbols excluded; order-free)."""
        h = hashlib.sha256()
        for name in ("token_ids", "medians", "mapping"):
            d = getattr(self, name)
            h.update(f"\x00{name}\x00".encode())
            if d is None:
                h.update(b"identity")
                continue
            keys = sorted(d)
            h.update("\x00".join(keys).encode())
            h.update(b"\x01")
            if name == "mapping":
                h.update("\x00".join([d[k] for k in keys]).encode())
            else:
                dtype = np.int64 if name == "token_ids" else np.float64
                h.update(np.array([d[k] for k in keys], dtype=dtype).tobytes())
        return h.hexdigest()

    def with_symbols(self, symbols: dict[str, str]) -> GeneVocab:
        """A shallow copy whose `symbols` are ``symbols`` (cached fingerprint kept)."""
        new = copy.copy(self)
        new.symbols = {str(k): str(v) for k, v in symbols.items()}
        return new

    def check_model_vocab_size(self, n: int) -> None:
        """Raise `InputError` unless a model's embedding size ``n`` equals this vocabulary's size."""
        if int(n) != self.size:
            msg = (
                f"vocabulary/model mismatch: the model has {int(n)} token embeddings but the "
                f"vocabulary has {self.size} tokens; tokenize with the dictionaries the model was "
                "trained with"
            )
            raise InputError(msg)

    # ------------------------------------------------------------------ constructors / IO
    @classmethod
    def from_geneformer(
        cls,
        token_dictionary: str | os.PathLike[str],
        gene_median_dictionary: str | os.PathLike[str],
        gene_mapping_dictionary: str | os.PathLike[str] | None = None,
    ) -> GeneVocab:
        """Load Geneformer's pickled dictionaries (V1 ``*_gc30M.pkl`` or V2 ``*_gc104M.pkl``).

        Parameters
        ----------
        token_dictionary
            ``token_dictionary_*.pkl`` (gene id -> token id).
        gene_median_dictionary
            ``gene_median_dictionary_*.pkl`` (gene id -> median); restricted to vocabulary genes.
        gene_mapping_dictionary
            ``ensembl_mapping_dict_*.pkl``; ``None`` gives the identity over the vocabulary.

        Returns
        -------
        The vocabulary.
        """
        tokens = load_pickle(token_dictionary)
        medians = load_pickle(gene_median_dictionary)
        mapping = None if gene_mapping_dictionary is None else load_pickle(gene_mapping_dictionary)
        _str_keys(tokens, str(token_dictionary))
        kept = {k: medians[k] for k in tokens if k not in SPECIAL_TOKENS and k in medians}
        if mapping is not None:
            mapping = {str(k): str(v) for k, v in mapping.items()}
        vocab = cls(token_ids=dict(tokens), medians=kept, mapping=mapping)
        logger.info(
            "loaded Geneformer vocabulary: %d tokens (%d genes), mapping %s",
            vocab.size,
            len(vocab.genes),
            "identity" if mapping is None else f"{len(vocab.mapping or {})} entries",
        )
        return vocab

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of `to_json`)."""
        return {
            "format": _JSON_FORMAT,
            "version": _JSON_VERSION,
            "fingerprint": self.fingerprint,
            "token_ids": self.token_ids,
            "medians": self.medians,
            "mapping": self.mapping,
            "symbols": self.symbols,
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as compact JSON (atomically); floats round-trip exactly."""
        head = json.dumps({"format": _JSON_FORMAT, "version": _JSON_VERSION, "fingerprint": self.fingerprint})
        symbols = json.dumps(self.symbols, sort_keys=True, separators=(",", ":"))
        return write_text(path, f'{head[:-1]},{self.core_json},"symbols":{symbols}}}\n')

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GeneVocab:
        """Read a vocabulary written by `to_json`."""
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            msg = f"cannot read vocabulary {path}: {e.strerror or e}"
            raise InputError(msg) from None
        except json.JSONDecodeError as e:
            msg = f"{path} is not valid JSON ({one_line(e)})"
            raise InputError(msg) from e
        if not isinstance(obj, dict) or obj.get("format") != _JSON_FORMAT:
            msg = f"{path} is not a geneattn vocabulary (format {_JSON_FORMAT!r})"
            raise InputError(msg)
        return cls(
            token_ids=obj["token_ids"],
            medians=obj["medians"],
            mapping=obj.get("mapping"),
            symbols=obj.get("symbols") or {},
        )


def build_vocab(
    data: AnnData | str | os.PathLike[str],
    *,
    gene_id_key: str | None = "ensembl_id",
    special_tokens: bool = True,
    n_counts_key: str = "n_counts",
    chunk_size: int = 2048,
    layer: str | None = None,
) -> GeneVocab:
    """Build a vocabulary from a corpus, as Geneformer's dictionaries were made.

    Token ids: ``<pad>`` = 0, ``<mask>`` = 1, then (with ``special_tokens``) ``<cls>`` = 2 and
    ``<eos>`` = 3, then the genes sorted by id. Gene ids are upper-cased; columns sharing an id
    are summed. A gene's median is the median over cells of its nonzero normalised expression
    ``x / n_counts * 10,000`` (float64); genes never expressed are left out.

    Parameters
    ----------
    data
        Raw counts (cells x genes): an AnnData in memory or backed, or an ``.h5ad`` path (read
        chunk by chunk).
    gene_id_key
        ``var`` column with gene ids; ``None`` uses ``var_names``. Ensembl versions are removed.
    special_tokens
        Add ``<cls>`` and ``<eos>`` (Geneformer V2 style).
    n_counts_key
        ``obs`` column with total counts; computed from row sums when absent.
    chunk_size
        Cells per chunk read.
    layer
        Where the raw counts are: ``None`` for ``X``, a layer name, or ``"raw"`` (as `tokenize`).

    Returns
    -------
    The vocabulary, with `GeneVocab.symbols` from ``var_names`` when they are not the ids.

    Notes
    -----
    Memory is proportional to the number of nonzero counts (exact medians need all values).
    """
    import scipy.sparse as sp

    counts = open_input(data, layer=layer)
    try:
        ids, symbols = gene_ids(counts.var, gene_id_key)
        upper = np.char.upper(ids.astype(str))
        uniq, inverse = np.unique(upper, return_inverse=True)
        n_counts = obs_n_counts(counts.obs, n_counts_key)
        cols, vals = [], []
        for start, x in row_chunks(counts, chunk_size):
            n = x.sum(axis=1).A1 if n_counts is None else n_counts[start : start + x.shape[0]]
            n = np.asarray(n, dtype=np.float64)
            if np.any(~(n > 0) & (np.diff(x.indptr) > 0)):
                msg = f"cells with counts have non-positive or missing {n_counts_key!r} (rows from {start})"
                raise InputError(msg)
            # sum columns that share an id: duplicates are summed by the CSR constructor
            m = sp.csr_matrix((x.data, inverse[x.indices], x.indptr), shape=(x.shape[0], uniq.size))
            m.sum_duplicates()
            m.eliminate_zeros()
            rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
            cols.append(m.indices.astype(np.int64))
            vals.append(m.data.astype(np.float64) / n[rows] * 10_000)
    finally:
        counts.close()
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    val = np.concatenate(vals) if vals else np.zeros(0)
    medians = _grouped_median(col, val, uniq.size)
    expressed = np.flatnonzero(np.bincount(col, minlength=uniq.size) > 0)
    if expressed.size == 0:
        msg = "no gene is expressed in any cell: cannot build a vocabulary"
        raise InputError(msg)
    specials = [PAD, MASK] + ([CLS, EOS] if special_tokens else [])
    token_ids = {s: i for i, s in enumerate(specials)}
    token_ids.update({str(uniq[j]): len(specials) + k for k, j in enumerate(expressed)})
    med = {str(uniq[j]): float(medians[j]) for j in expressed}
    sym = {}
    if symbols is not None:
        for gid, s in zip(upper, symbols, strict=True):
            sym.setdefault(str(gid), str(s))
        sym = {k: v for k, v in sym.items() if k in med}
    logger.info("built vocabulary: %d genes expressed of %d", expressed.size, uniq.size)
    return GeneVocab(token_ids=token_ids, medians=med, mapping=None, symbols=sym)


def _grouped_median(col: np.ndarray, val: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``val`` per group ``col`` (NaN for empty groups), without a loop over groups."""
    order = np.lexsort((val, col))
    v = val[order]
    counts = np.bincount(col, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_groups, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = (v[lo] + v[hi]) / 2
    return out
