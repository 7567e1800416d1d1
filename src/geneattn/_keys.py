"""Names of the .obs/.var columns and token columns geneattn reads or writes (results paths: `geneattn._results`)."""

from __future__ import annotations

# canonical AnnData (design.md, "Contracts")
LABEL = "label"
GROUP = "group"
N_COUNTS = "n_counts"
N_GENES = "n_genes"
WELL = "well"
REPLICATE = "replicate"
ENSEMBL_ID = "ensembl_id"
PLANTED = "planted"
LFC_MAX = "lfc_max"
FILTER_PASS = "filter_pass"
CELL_ID = "cell_id"

# tokens (HF datasets on disk)
INPUT_IDS = "input_ids"
LENGTH = "length"

# obs columns carried into the study's tokens (splits are grouped by well, metrics by group)
TOKEN_OBS_KEYS = (LABEL, GROUP, WELL, REPLICATE, N_GENES)

# how a classifier summarises a cell (``geneattn_pooling`` in a model's config.json):
# ``auto`` = the checkpoint's own (``cls`` with a ``<cls>`` token, else ``first``)
POOLINGS = ("auto", "cls", "first", "mean")
