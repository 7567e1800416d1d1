"""Stage ``attention``: streaming attention statistics of both models, their change and top genes."""

from __future__ import annotations

import pandas as pd

from .._results import OTHER, REF
from ._stage import StageContext, stage
from .training import device_of, finetuned_dir, pretrained_dir

#: attention tables also listed under tables/ (the results layout of design.md)
LINKED_TABLES = ("attention_by_gene", "attention_by_position", "head_norms")


@stage("attention", deps=("finetune",), reads=("model", "checkpoint", "finetuned", "attention_batch_size", "rank_bin", "device"),
       outputs=("attention/params.json", "tables/head_change.parquet", "tables/top_genes.parquet"))  # fmt: skip
def attention(ctx: StageContext) -> str:
    """Attention statistics of both models (``attention/``), pt-vs-ft change and top genes (``tables/``)."""
    from ..attention import compare, extract, top_genes
    from ..tokenize import load_vocab

    res, cfg = ctx.results, ctx.config
    models = {REF: pretrained_dir(cfg, res), OTHER: finetuned_dir(cfg, res)}
    result = extract(models, res.tokens, load_vocab(res.tokens), out=res.attention,
                     batch_size=cfg.attention_batch_size, label_key="label", device=device_of(cfg))  # fmt: skip
    for name, df in compare(result, reference=REF, other=OTHER, bins=cfg.rank_bin).items():
        ctx.write_table(name, df)
    abg = result.tables["attention_by_gene"]
    top = pd.concat([top_genes(abg, k=100, model=m) for m in (REF, OTHER)], ignore_index=True)
    ctx.write_table("top_genes", top, k=100)
    for name in LINKED_TABLES:
        res.link_table(res.attention / f"{name}.parquet", name)
    ft = top[top["model"] == OTHER]["gene"].astype(str).tolist()
    return (
        f"{result.params.get('n_cells', '?')} cells x 2 models; top genes (fine-tuned): {', '.join(ft[:6])}"
    )
