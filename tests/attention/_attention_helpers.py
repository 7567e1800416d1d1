"""Helpers: tiny BERTs, tiny token datasets and a brute-force reference from HF eager ``output_attentions``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from datasets import Dataset

VOCAB_SIZE = 40


def tiny_model(seed: int = 0, *, classifier: bool = False) -> torch.nn.Module:
    """HF tester sizes (hidden 32, 2 layers, 4 heads, intermediate 37); larger init so attention is peaked."""
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, initializer_range=0.3, num_labels=3,
    )  # fmt: skip
    cls = BertForSequenceClassification if classifier else BertForMaskedLM
    return cls(cfg).eval()


def tiny_vocab() -> SimpleNamespace:
    id_to_gene = np.array(["<pad>", "<mask>"] + [f"ENSG{i:05d}" for i in range(2, VOCAB_SIZE)])
    symbols = {g: f"G{i}" for i, g in enumerate(id_to_gene) if i % 2 == 0 and i >= 2}
    return SimpleNamespace(id_to_gene=id_to_gene, symbols=symbols, pad_id=0, size=VOCAB_SIZE)


def tiny_tokens(n_cells: int = 9, seed: int = 0, *, max_len: int = 24) -> Dataset:
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, max_len + 1, size=n_cells)
    cells = [rng.choice(np.arange(2, VOCAB_SIZE), size=n, replace=False).tolist() for n in lens]
    return Dataset.from_dict(
        {
            "input_ids": cells,
            "length": [len(c) for c in cells],
            "cell_id": [f"cell{i}" for i in range(n_cells)],
            "label": [["0", "0.5", "5"][i % 3] for i in range(n_cells)],
        }
    )


@torch.no_grad()
def reference_tokens(model: torch.nn.Module, ds: Dataset) -> pd.DataFrame:
    """One row per (cell, layer, head, token), brute force: each cell alone through HF eager attention.

    Kobayashi norms follow the reference code: an explicit ``[B, H, L, L, D]`` einsum.
    """
    eager = type(model)(model.config).eval()
    eager.load_state_dict(model.state_dict())
    eager.set_attn_implementation("eager")
    base = eager.bert
    rows = []
    for c, ids in enumerate(ds["input_ids"]):
        x = torch.tensor([ids])
        out = base(input_ids=x, output_attentions=True, output_hidden_states=True)
        n = len(ids)
        for li, layer in enumerate(base.encoder.layer):
            a = out.attentions[li].double()  # [1, H, L, L]
            sa = layer.attention.self
            nh, d = sa.num_attention_heads, sa.attention_head_size
            v = sa.value(out.hidden_states[li]).view(1, n, nh, d).transpose(1, 2).double()
            dense = layer.attention.output.dense.weight.double().view(-1, nh, d).permute(1, 2, 0)  # [H, d, D]
            f = torch.einsum("bhld,hdD->bhlD", v, dense)
            weighted = torch.einsum("bhks,bhsd->bhksd", a, f)  # [1, H, L, L, D]
            wnorm = weighted.norm(dim=-1)  # ||alpha_ij f(x_j)||
            head_out = weighted.sum(3).norm(dim=-1)  # ||sum_j alpha_ij f(x_j)||
            colsum = a.sum(2)
            for h in range(nh):
                rows.append(
                    pd.DataFrame(
                        {
                            "cell": c, "layer": li, "head": h, "position": np.arange(n), "token_id": ids,
                            "recv": (colsum[0, h] / n).numpy(), "fold": colsum[0, h].numpy(),
                            "logfold": np.log(colsum[0, h].numpy()), "norm": (wnorm[0, h].sum(0) / n).numpy(),
                            "fnorm": f[0, h].norm(dim=-1).numpy(), "first": a[0, h, 0].numpy(),
                            "head_out": head_out[0, h].numpy(), "length": n,
                            "label": ds["label"][c] if "label" in ds.column_names else "__all__",
                        }
                    )
                )  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def distributed_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One process of the 2-process (gloo) test: same models and cells, statistics all-reduced."""
    import torch.distributed as dist

    from geneattn import settings
    from geneattn.attention import extract

    torch.set_num_threads(1)
    settings.progress = False
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        extract({"pt": tiny_model(0), "ft": tiny_model(1)}, tiny_tokens(11, seed=5), tiny_vocab(), out=out,
                batch_size=2, device="cpu", length_bins=4)  # fmt: skip
    finally:
        dist.destroy_process_group()
