"""Names of every .obs/.var/.uns slot and results file geneattn reads or writes."""

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
