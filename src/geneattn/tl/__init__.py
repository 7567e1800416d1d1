"""Tools (scanpy's ``sc.tl`` idiom): AnnData in, results written into it.

- `gene_attention`: per-gene attention of one model, per class with ``groupby`` (``varm``/``var``/``uns``);
- `attention_change`: pretrained vs fine-tuned, per head x rank bin (``uns``) and per gene (``varm``/``var``);
- `finetune`: the study's fine-tuning recipe on an AnnData (a model directory on disk).

Each tokenizes with the model's own settings (`geneattn.models.token_settings`) and keeps nothing on
disk unless asked (``out=``). Read the results back with `geneattn.get`, draw them with `geneattn.pl`.
"""

from __future__ import annotations

from ._attention_change import attention_change
from ._finetune import finetune
from ._gene_attention import gene_attention

__all__ = ["gene_attention", "attention_change", "finetune"]
