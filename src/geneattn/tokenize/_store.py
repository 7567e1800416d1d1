"""The tokens directory: Arrow shards in the layout ``datasets.Dataset.save_to_disk`` writes.

`Sink` collects record batches of encoded cells in memory, or streams them into Arrow IPC shards
of a (temporary) directory and finally writes ``dataset_info.json``, ``state.json`` and
geneattn's ``vocab.json`` and ``tokenize.json``; ``datasets.load_from_disk`` reads the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import _keys
from .._atomic import write_json
from ..errors import InputError
from .vocab import GeneVocab

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = ["Sink", "schema", "static_columns", "check_out", "VOCAB_FILE", "PARAMS_FILE"]

VOCAB_FILE = "vocab.json"
PARAMS_FILE = "tokenize.json"
_MAX_SHARD_BYTES = 500 * 2**20  # save_to_disk's default


def check_out(out: str | os.PathLike[str] | None) -> Path | None:
    """The output directory, checked: absent, empty or earlier tokens, under a writable folder."""
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
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:  # created (and removed on failure) by atomic_dir
        parent = parent.parent
    if not parent.is_dir():
        msg = f"cannot create output directory {path.parent}: {parent} is a file"
        raise InputError(msg)
    if not os.access(parent, os.W_OK):
        msg = f"output directory {parent} is not writable"
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


def static_columns(obs: pd.DataFrame, obs_keys: list[str]) -> dict[str, pa.Array]:
    """Per-cell columns copied to the dataset: ``cell_id`` (obs names) and ``obs_keys``."""
    cols = {_keys.CELL_ID: pa.array(obs.index.astype(str).to_numpy(dtype=object), type=pa.string())}
    for k in obs_keys:
        cols[k] = _obs_arrow(obs[k].reset_index(drop=True))
    return cols


def schema(columns: dict[str, pa.Array]) -> pa.Schema:
    """The dataset's Arrow schema: ``input_ids``, ``length`` and the static ``columns``."""
    import datasets

    fields = [
        pa.field(_keys.INPUT_IDS, pa.list_(pa.int32())),
        pa.field(_keys.LENGTH, pa.int64()),
        *(pa.field(k, v.type) for k, v in columns.items()),
    ]
    # datasets' schema carries the "huggingface" features metadata load_from_disk expects
    return datasets.Features.from_arrow_schema(pa.schema(fields)).arrow_schema


class Sink:
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
