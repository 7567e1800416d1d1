"""``geneattn attention``: attention statistics of one or more models over tokenized cells."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from .app import app

logger = logging.getLogger("geneattn.cli")


def _names(models: list[Path], names: list[str] | None) -> list[str]:
    if names:
        if len(names) != len(models):
            raise InputError(f"{len(names)} --name for {len(models)} --model; give one name per model")
        out = list(names)
    else:
        out = [m.resolve().name or "model" for m in models]
    if len(set(out)) != len(out):
        raise InputError(f"model names must be unique, got {out}; use --name")
    return out


@app.command()
def attention(
    tokens: Annotated[Path, typer.Argument(help="Tokenized dataset directory (geneattn tokenize --out).")],
    model: Annotated[list[Path], typer.Option("--model", help="Model directory; repeat for several models.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for the tables and token store.")],
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Name of each --model, in order (default: directory name)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Cells per forward pass.")] = 16,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: settings.device).")] = None,
    label_key: Annotated[str, typer.Option(help="Column with the class of each cell.")] = "label",
    length_bins: Annotated[
        int, typer.Option(help="Cell-length quantile bins for the position x length table.")
    ] = 10,
    store_tokens: Annotated[  # noqa: FBT002 - a typer flag
        bool, typer.Option("--store-tokens/--no-store-tokens", help="Write the per-token log-fold store.")
    ] = True,
) -> None:
    """Per-gene, per-position and per-head attention statistics (Parquet tables in --out)."""
    from .._owned import check_out_spares_inputs
    from ..attention import extract

    check_out_spares_inputs(out, {"--model": model, "the tokens": tokens})
    names = _names(model, name)
    for m in model:
        if not m.is_dir():
            raise InputError(f"model directory {m} not found")
    if not tokens.is_dir():
        raise InputError(f"token dataset {tokens} not found")
    vocab = None
    if (tokens / "vocab.json").is_file():
        from ..tokenize import load_vocab

        vocab = load_vocab(tokens)
    res = extract(
        dict(zip(names, model, strict=True)), tokens, vocab, out=out, batch_size=batch_size, label_key=label_key,
        device=device, length_bins=length_bins, store_tokens=store_tokens,
    )  # fmt: skip
    n_genes = res.tables["attention_by_gene"]["token_id"].nunique()
    logger.info("%d cells x %d models, %d genes -> %s", res.params["n_cells"], len(names), n_genes, out)
