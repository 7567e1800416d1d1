"""`finetune`: the study's fine-tuning recipe (`geneattn.models.recipe`) on the cells of an AnnData."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _keys as K
from .._atomic import write_json
from . import _prepare

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

    from ..models import FinetuneResult

__all__ = ["finetune"]

logger = logging.getLogger(__name__)


def finetune(
    adata: AnnData,
    model: str | os.PathLike[str],
    *,
    label_key: str = "label",
    out: str | os.PathLike[str],
    groups: str | Mapping[str, Sequence[str]] | None = None,
    dictionaries: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    layer: str | None = None,
    model_input_size: int | None = None,
    seed: int = 0,
    **overrides: object,
) -> FinetuneResult:
    """Fine-tune ``model`` to classify the cells by ``obs[label_key]``, exactly as ``geneattn run`` does.

    The recipe is `geneattn.models.recipe` (``dataset``'s, Geneformer's learning rate for a
    Geneformer checkpoint), the split is grouped by ``obs["well"]`` (else ``replicate``) when present,
    and the tokens are made with the model's own settings (`geneattn.models.token_settings`).

    Parameters
    ----------
    adata
        Raw counts (``X``, or ``layer``) and the labels.
    model
        The pretrained model: a shipped checkpoint's name or path, a model of ours, or a Geneformer
        checkpoint with ``dictionaries``.
    label_key
        ``obs`` column with the class of each cell.
    out
        The fine-tuned model's directory (an HF directory with ``metrics.json``, ``splits.parquet``,
        and the tokenizer: ``vocab.json`` and ``recipe.json``, so it can be passed to the other tools).
    groups
        Coarse groups of classes for extra metrics: ``"low=0.1,0.5;high=5,10"`` or a mapping.
    dictionaries
        Geneformer's dictionaries for a Geneformer checkpoint.
    dataset
        A built-in dataset whose recipe to use (``"pbmc68k"``); None: the default recipe.
    layer, model_input_size
        As in `geneattn.tl.gene_attention`.
    seed
        Seed of the split, the head's initialisation, batching, dropout and the bootstrap.
    **overrides
        `geneattn.models.FinetuneConfig` fields replacing the recipe's (e.g. ``epochs=1``, ``device="cpu"``).

    Returns
    -------
    `geneattn.models.FinetuneResult`: ``model_dir``, test ``metrics`` (with the baselines) and ``splits``.
    """
    from ..io import parse_groups
    from ..models import finetune as train
    from ..models import recipe, token_settings

    _prepare.check_groupby(adata, label_key)
    ts = token_settings(model, dictionaries=dictionaries, model_input_size=model_input_size)
    ds = _prepare.tokens(adata, ts, obs_keys=[label_key, *K.TOKEN_OBS_KEYS], layer=layer)
    config = recipe(dataset, geneformer=ts.geneformer, **overrides)
    parsed = parse_groups(groups) if groups is not None else None
    result = train(ds, model=ts.path, out=out, label_key=label_key, groups=parsed, config=config, seed=seed)
    ts.vocab.to_json(Path(result.model_dir) / "vocab.json")
    write_json(Path(result.model_dir) / "recipe.json", {
        "model_input_size": int(ts.model_input_size), "special_tokens": bool(ts.special_tokens),
        "fine_tuned_from": str(ts.path), "seed": int(seed), "config": dataclasses.asdict(config),
    })  # fmt: skip
    logger.info("fine-tuned %s -> %s (test accuracy %.3f)", ts.path, result.model_dir,
                result.metrics.get("accuracy", float("nan")))  # fmt: skip
    return result
