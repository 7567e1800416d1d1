"""``geneattn pretrain`` and ``geneattn finetune``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._owned import check_out_spares_inputs
from ..errors import InputError
from .app import app

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from ..tokenize import GeneVocab

logger = logging.getLogger("geneattn.cli")


def _read_tokens(tokens: Path) -> tuple[datasets.Dataset, GeneVocab]:
    """Token dataset and its vocabulary (``vocab.json`` beside it, as `geneattn tokenize` writes)."""
    from ..models._data import as_dataset
    from ..tokenize import load_vocab

    ds = as_dataset(tokens)
    if not (Path(tokens) / "vocab.json").is_file():
        msg = f"{tokens} has no vocab.json: tokenize with `geneattn tokenize`, which writes it beside the tokens"
        raise InputError(msg)
    return ds, load_vocab(tokens)


def _parse_groups(spec: str | None) -> dict[str, list[str]] | None:
    if not spec:
        return None
    from ..io import parse_groups

    return parse_groups(spec)


@app.command()
def pretrain(
    tokens: Annotated[Path, typer.Argument(help="Tokenized dataset directory (geneattn tokenize --out).")],
    out: Annotated[
        Path, typer.Option("--out", help="Output model directory (resumes if it has checkpoints).")
    ],
    preset: Annotated[
        str, typer.Option(help="Model size: mini, gf-6L-30M-i2048, Geneformer-V2-104M, ...")
    ] = "mini",
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the corpus (default: PretrainConfig).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cells per step and process.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Pretrain a Geneformer-style model by masked gene modelling (see `geneattn.models.pretrain`)."""
    from ..models import PretrainConfig
    from ..models import pretrain as _pretrain

    check_out_spares_inputs(out, {"the tokens": tokens})
    ds, vocab = _read_tokens(tokens)
    overrides = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
    cfg = PretrainConfig(preset=preset, **{k: v for k, v in overrides.items() if v is not None})
    _pretrain(ds, vocab, out=out, config=cfg, seed=seed)


@app.command()
def finetune(
    tokens: Annotated[Path, typer.Argument(help="Tokenized dataset directory with a label column.")],
    model: Annotated[Path, typer.Option("--model", help="Pretrained model directory.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output directory (model, metrics.json, splits.parquet).")
    ],
    label_key: Annotated[str, typer.Option(help="Column with the class to predict.")] = "label",
    groups: Annotated[
        str | None, typer.Option(help='Coarse groups for extra metrics: "low=0.1,0.5;high=5,10".')
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs (early stopping on validation loss).")
    ] = None,
    freeze_layers: Annotated[int | None, typer.Option(help="Freeze the first N encoder layers.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cells per step and process.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fine-tune a cell classifier and report test metrics (see `geneattn.models.finetune`)."""
    from ..models import FinetuneConfig
    from ..models import finetune as _finetune

    if not model.is_dir():
        msg = f"model directory {model} does not exist"
        raise InputError(msg)
    check_out_spares_inputs(out, {"the tokens": tokens, "--model": model})
    ds, vocab = _read_tokens(tokens)
    overrides = {
        "epochs": epochs,
        "freeze_layers": freeze_layers,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
    }
    cfg = FinetuneConfig(**{k: v for k, v in overrides.items() if v is not None})
    from ..models import load

    load(model, vocab=vocab)  # vocabulary check with a clear message before training
    result = _finetune(
        ds, model=model, out=out, label_key=label_key, groups=_parse_groups(groups), config=cfg, seed=seed
    )
    m = result.metrics
    logger.info(
        "test accuracy %.3f, macro-F1 %.3f (logistic regression %.3f / %.3f, majority %.3f)",
        m["accuracy"],
        m["macro_f1"],
        *(
            (
                m["baselines"]["logreg"]["accuracy"],
                m["baselines"]["logreg"]["macro_f1"],
                m["baselines"]["majority"]["accuracy"],
            )
            if m.get("baselines")
            else (float("nan"),) * 3
        ),
    )
