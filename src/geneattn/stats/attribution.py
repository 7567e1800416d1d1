"""Baselines for attention: simpler gene scores on the same cells (methods §2–3).

Per-token scores on the same cells as the attention analysis, in the token-store layout
(`TokenScores`: flat values + ``offsets`` + ``token_ids``), reduced to the gene table
``token_id, gene, n_cells, score_mean`` shared by every method:

* ``rollout``: attention rollout (Abnar & Zuidema) read out with the mean-pooled cell vector
  ``r = valid / n_c`` (``r^T Ã^L ... Ã^1``, ``Ã = ½ mean_h A + ½ I``), scaled by ``n_c`` (uniform → 1).
  Uses the eager attention path (``output_attentions=True``): ``L × L`` per head and layer, fine for
  a baseline on small models, quadratic memory on real ones.
* ``grad_input``: ``Σ_D e_j ⊙ ∂y/∂e_j`` on the *word* embeddings (``inputs_embeds =
  word_embeddings(ids)``, so positions/LayerNorm are not added twice — methods §3 pitfall).
* ``integrated_gradients``: same, path from the all-``<mask>`` baseline (pads kept), midpoint
  Riemann sum with ``n_steps`` steps; completeness ``Σ_j IG_j ≈ y(x) − y(baseline)``.
* ``deletion``: Geneformer-style in-silico deletion of each of the top-K ranked genes of a cell:
  ``Δp = p_y(x) − p_y(x∖g)`` and the cosine shift ``1 − cos`` of the mean-pooled embedding.
* ``de``: the DE score alone; ``mean_rank`` and ``detection``: trivial gene-level baselines.

The target ``y`` is the logit of the cell's true label (``target="label"``; falls back to the
predicted class when the label is not one of the model's classes) or of the predicted class.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ..models._data import pad_batch
from .agreement import auprc, auroc, spearman, topk_overlap
from .confounds import gene_means, length_bins, position_residual

__all__ = [
    "Cells",
    "TokenScores",
    "cells_from_tokens",
    "targets_for",
    "rollout",
    "grad_input",
    "integrated_gradients",
    "deletion",
    "gene_table",
    "compare_methods",
    "METHODS_COLUMNS",
]

logger = logging.getLogger(__name__)

METHODS_COLUMNS = [
    "method",
    "score_type",
    "n_genes",
    "auroc_planted",
    "auprc_planted",
    "spearman_vs_de",
    "topk_overlap_de",
    "hypergeom_p",
    "seconds_per_cell",
    "n_cells",
]


@dataclasses.dataclass
class Cells:
    """Token sequences of a set of cells: ``input_ids`` (one int array per cell), ``cell_ids``, ``labels``."""

    input_ids: list[np.ndarray]
    cell_ids: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def offsets(self) -> np.ndarray:
        """``[n_cells + 1]`` token offsets."""
        return np.r_[0, np.cumsum([len(x) for x in self.input_ids])].astype(np.int64)

    @property
    def token_ids(self) -> np.ndarray:
        """All token ids, concatenated."""
        return np.concatenate(self.input_ids).astype(np.int64) if len(self) else np.zeros(0, np.int64)


@dataclasses.dataclass
class TokenScores:
    """Per-token scores of one method, token-store layout; NaN = token not scored."""

    method: str
    values: np.ndarray  # [n_tokens]
    offsets: np.ndarray
    token_ids: np.ndarray
    seconds: float
    n_cells: int

    @property
    def seconds_per_cell(self) -> float:
        """Wall time per cell of the method."""
        return self.seconds / max(self.n_cells, 1)


def cells_from_tokens(
    tokens: object, *, n_cells: int | None = None, seed: int = 0, label_key: str = "label"
) -> Cells:
    """Cells from a tokenized ``datasets.Dataset`` (columns ``input_ids``, optional ``cell_id``, label).

    ``n_cells`` draws a seeded subsample (sorted, so the order matches the dataset).
    """
    cols = tokens.column_names  # type: ignore[attr-defined]
    n = len(tokens)  # type: ignore[arg-type]
    rows = np.arange(n)
    if n_cells is not None and n_cells < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, n_cells, replace=False))
    sub = tokens.select(rows.tolist())  # type: ignore[attr-defined]
    ids = [np.asarray(x, dtype=np.int64) for x in sub["input_ids"]]
    cid = np.asarray(sub["cell_id"]).astype(str) if "cell_id" in cols else rows.astype(str)
    lab = np.asarray([str(x) for x in sub[label_key]]) if label_key in cols else None
    return Cells(ids, cid, lab)


def _batches(n: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def targets_for(
    model: torch.nn.Module, cells: Cells, *, target: str = "label", pad_id: int = 0, batch_size: int = 16
) -> np.ndarray:
    """Target class index per cell: the true label's index in ``config.label2id`` or the prediction."""
    preds = np.zeros(len(cells), dtype=np.int64)
    with torch.inference_mode():
        for rows in _batches(len(cells), batch_size):
            ids, mask = pad_batch([cells.input_ids[r] for r in rows], pad_id)
            preds[rows] = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).numpy()
    if target == "predicted" or cells.labels is None:
        return preds
    l2i = {str(k): int(v) for k, v in (getattr(model.config, "label2id", None) or {}).items()}
    return np.array(
        [l2i.get(str(lab), p) for lab, p in zip(cells.labels, preds, strict=True)], dtype=np.int64
    )


def _flat(per_cell: list[np.ndarray], cells: Cells, method: str, t0: float) -> TokenScores:
    return TokenScores(method, np.concatenate(per_cell).astype(np.float64), cells.offsets, cells.token_ids,
                       time.perf_counter() - t0, len(cells))  # fmt: skip


def _eager(model: torch.nn.Module) -> str | None:
    old = getattr(model.config, "_attn_implementation", None)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    return old


def rollout(model: torch.nn.Module, cells: Cells, *, pad_id: int = 0, batch_size: int = 8) -> TokenScores:
    """Attention rollout read out with the mean-pooled cell vector; score ``n_c · (r^T J)_j``."""
    t0 = time.perf_counter()
    old = _eager(model)
    out = []
    try:
        with torch.inference_mode():
            for rows in _batches(len(cells), batch_size):
                ids, mask = pad_batch([cells.input_ids[r] for r in rows], pad_id)
                att = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
                n = mask.sum(1, keepdim=True).double()
                u = mask.double() / n  # [B, L] readout r
                eye = torch.eye(ids.shape[1], dtype=torch.float64)
                for a in reversed(att):  # last layer first: u <- u^T Ã^l
                    a_til = 0.5 * a.double().mean(1) + 0.5 * eye  # [B, L, L]
                    u = torch.einsum("bi,bij->bj", u, a_til)
                u = u * n
                out += [u[i, : len(cells.input_ids[r])].numpy() for i, r in enumerate(rows)]
    finally:
        if old is not None and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(old)
    return _flat(out, cells, "rollout", t0)


def _logit_and_grad(model: torch.nn.Module, emb: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor):
    emb = emb.detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, attention_mask=mask).logits
    y = logits.gather(1, tgt[:, None]).squeeze(1)
    (g,) = torch.autograd.grad(y.sum(), emb)
    return y.detach(), g


def grad_input(
    model: torch.nn.Module, cells: Cells, targets: np.ndarray, *, pad_id: int = 0, batch_size: int = 8
) -> TokenScores:
    """Gradient × input on the word embeddings, summed over the embedding dimension."""
    t0 = time.perf_counter()
    wemb = model.get_input_embeddings()
    out = []
    for rows in _batches(len(cells), batch_size):
        ids, mask = pad_batch([cells.input_ids[r] for r in rows], pad_id)
        e = wemb(ids).detach()
        _, g = _logit_and_grad(model, e, mask, torch.as_tensor(targets[rows]))
        s = (e * g).sum(-1)
        out += [s[i, : len(cells.input_ids[r])].numpy() for i, r in enumerate(rows)]
    return _flat(out, cells, "grad_input", t0)


def integrated_gradients(
    model: torch.nn.Module,
    cells: Cells,
    targets: np.ndarray,
    *,
    mask_id: int,
    pad_id: int = 0,
    n_steps: int = 16,
    batch_size: int = 8,
    return_delta: bool = False,
) -> TokenScores | tuple[TokenScores, np.ndarray]:
    """Integrated gradients on the word embeddings from the all-``<mask>`` baseline (midpoint rule).

    With ``return_delta`` also returns the completeness gap ``Σ_j IG_j − (y(x) − y(x'))`` per cell.
    """
    t0 = time.perf_counter()
    wemb = model.get_input_embeddings()
    out, deltas = [], []
    for rows in _batches(len(cells), batch_size):
        ids, mask = pad_batch([cells.input_ids[r] for r in rows], pad_id)
        tgt = torch.as_tensor(targets[rows])
        e = wemb(ids).detach()
        e0 = wemb(torch.where(mask.bool(), torch.full_like(ids, mask_id), ids)).detach()
        total = torch.zeros_like(e)
        for k in range(n_steps):
            alpha = (k + 0.5) / n_steps
            _, g = _logit_and_grad(model, e0 + alpha * (e - e0), mask, tgt)
            total += g
        s = ((e - e0) * total / n_steps).sum(-1)
        out += [s[i, : len(cells.input_ids[r])].numpy() for i, r in enumerate(rows)]
        if return_delta:
            with torch.inference_mode():
                y1 = model(inputs_embeds=e, attention_mask=mask).logits.gather(1, tgt[:, None]).squeeze(1)
                y0 = model(inputs_embeds=e0, attention_mask=mask).logits.gather(1, tgt[:, None]).squeeze(1)
            deltas.append((s.sum(1) - (y1 - y0)).detach().numpy())
    res = _flat(out, cells, "integrated_gradients", t0)
    return (res, np.concatenate(deltas)) if return_delta else res


def deletion(
    model: torch.nn.Module,
    cells: Cells,
    targets: np.ndarray,
    *,
    top_k: int = 20,
    pad_id: int = 0,
    emb_layer: int = -1,
    batch_size: int = 32,
) -> tuple[TokenScores, TokenScores]:
    """In-silico deletion of each of the top-``top_k`` ranked genes of every cell.

    Returns
    -------
    ``(prob_shift, embedding_shift)``: ``p_y(x) − p_y(x∖g)`` and ``1 − cos(emb(x), emb(x∖g))`` with the
    cell embedding = mean over genes of ``hidden_states[n_layers + emb_layer]`` (Geneformer's default:
    second-to-last layer). Tokens beyond ``top_k`` are NaN (not scored).
    """
    t0 = time.perf_counter()
    dp_all, cs_all = [], []

    def _embed(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        probs, embs = [], []
        for rows in _batches(len(seqs), batch_size):
            ids, mask = pad_batch([seqs[r] for r in rows], pad_id)
            o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            h = o.hidden_states[len(o.hidden_states) - 1 + emb_layer]
            m = mask[..., None].to(h.dtype)
            embs.append((h * m).sum(1) / m.sum(1))
            probs.append(torch.softmax(o.logits, -1))
        return torch.cat(probs), torch.cat(embs)

    with torch.inference_mode():
        for c, seq in enumerate(cells.input_ids):
            k = min(top_k, len(seq) - 1)
            variants = [seq] + [np.delete(seq, p) for p in range(k)]
            probs, embs = _embed(variants)
            y = int(targets[c])
            dp = np.full(len(seq), np.nan)
            cs = np.full(len(seq), np.nan)
            dp[:k] = (probs[0, y] - probs[1:, y]).numpy()
            cs[:k] = (1 - torch.nn.functional.cosine_similarity(embs[1:], embs[:1], dim=-1)).numpy()
            dp_all.append(dp)
            cs_all.append(cs)
    a = _flat(dp_all, cells, "deletion_prob", t0)
    b = _flat(cs_all, cells, "deletion_cosine", t0)
    return a, b


def gene_table(scores: TokenScores, *, gene_map: Mapping[int, str] | pd.Series | None = None,
               residual: bool = False, n_length_bins: int = 10) -> pd.DataFrame:  # fmt: skip
    """Gene-level table ``token_id, gene, n_cells, score_mean`` (mean over the cells where scored).

    ``residual=True`` first subtracts the position × length-bin expectation of the score
    (the confound control of `confounds.position_residual`), computed over scored tokens.
    """
    lengths = np.diff(scores.offsets)
    pos = np.arange(scores.offsets[-1]) - np.repeat(scores.offsets[:-1], lengths)
    tbin = np.repeat(length_bins(lengths, n_length_bins), lengths)
    ok = ~np.isnan(scores.values)
    v = scores.values[ok]
    if residual:
        v = position_residual(v, pos[ok], tbin[ok])
    g = gene_means(v, scores.token_ids[ok]).rename(columns={"mean": "score_mean"}).drop(columns="sd")
    gm = None if gene_map is None else (gene_map if isinstance(gene_map, pd.Series) else pd.Series(gene_map))
    g.insert(
        1,
        "gene",
        g["token_id"].astype(str) if gm is None else g["token_id"].map(gm).fillna(g["token_id"].astype(str)),
    )
    return g[["token_id", "gene", "n_cells", "score_mean"]]


def compare_methods(
    gene_scores: Mapping[tuple[str, str], pd.Series],
    *,
    de_score: pd.Series | None = None,
    planted: pd.Series | None = None,
    seconds_per_cell: Mapping[str, float] | None = None,
    n_cells: Mapping[str, int] | None = None,
    k: int = 20,
) -> pd.DataFrame:
    """The ``methods`` table: each (method, score_type) gene score judged on the same gene universe.

    Parameters
    ----------
    gene_scores
        ``(method, score_type) -> Series`` (gene symbol → score; higher = more important).
        ``score_type`` is e.g. ``"raw"`` or ``"residual"`` (with confound control).
    de_score
        DE score per gene (Spearman and top-k overlap).
    planted
        ``var["planted"]`` for simulated data (AUROC/AUPRC; unscored genes rank last).
    seconds_per_cell, n_cells
        Cost and cells used, by method.
    k
        Top-k of the overlap.

    Returns
    -------
    DataFrame with `METHODS_COLUMNS`.
    """
    rows = []
    for (method, stype), s in gene_scores.items():
        s = s[~s.index.duplicated()].astype(float)
        row = {"method": method, "score_type": stype, "n_genes": int(s.notna().sum())}
        if planted is not None:
            pl = planted.astype(bool)
            sv = s.reindex(pl.index)
            sv = sv.fillna((np.nanmin(sv.to_numpy()) - 1) if sv.notna().any() else 0.0)
            row["auroc_planted"], row["auprc_planted"] = (
                auroc(sv.to_numpy(), pl.to_numpy()),
                auprc(sv.to_numpy(), pl.to_numpy()),
            )
        if de_score is not None:
            row["spearman_vs_de"] = spearman(s, de_score)[0]
            ov = topk_overlap(s.dropna(), de_score.dropna(), k)
            row["topk_overlap_de"], row["hypergeom_p"] = ov["overlap"], ov["pval"]
        row["seconds_per_cell"] = (seconds_per_cell or {}).get(method, np.nan)
        row["n_cells"] = (n_cells or {}).get(method, np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=METHODS_COLUMNS)
