"""``geneattn tokenize``: Geneformer rank-value encoding of an .h5ad file to a tokens directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from .app import app

logger = logging.getLogger(__name__)


def _check_args(
    input_h5ad: Path,
    model_input_size: int | None,
    chunk_size: int,
    dictionaries: tuple[Path | None, Path | None, Path | None],
) -> None:
    token, median, mapping = dictionaries
    if not input_h5ad.is_file():
        msg = f"input file not found: {input_h5ad}"
        raise InputError(msg)
    if model_input_size is not None and model_input_size < 1:
        msg = f"--model-input-size must be >= 1, got {model_input_size}"
        raise InputError(msg)
    if chunk_size < 1:
        msg = f"--chunk-size must be >= 1, got {chunk_size}"
        raise InputError(msg)
    if (token is None) != (median is None):
        msg = "--token-dictionary and --gene-median-dictionary go together (or give neither to build a vocabulary)"
        raise InputError(msg)
    if token is None and mapping is not None:
        msg = "--gene-mapping-dictionary needs --token-dictionary and --gene-median-dictionary"
        raise InputError(msg)


@app.command()
def tokenize(
    input_h5ad: Annotated[
        Path, typer.Argument(metavar="INPUT.h5ad", help="Raw counts (read chunk by chunk, never modified).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output tokens directory (datasets save_to_disk layout).")
    ],
    token_dictionary: Annotated[
        Path | None,
        typer.Option(help="Geneformer token_dictionary_*.pkl (else a vocabulary is built from the input)."),
    ] = None,
    gene_median_dictionary: Annotated[
        Path | None, typer.Option(help="Geneformer gene_median_dictionary_*.pkl.")
    ] = None,
    gene_mapping_dictionary: Annotated[
        Path | None, typer.Option(help="Geneformer ensembl_mapping_dict_*.pkl (default: identity).")
    ] = None,
    model_input_size: Annotated[
        int | None,
        typer.Option(
            help="Maximum tokens per cell incl. special tokens (default: 4096 with special tokens, else 2048)."
        ),
    ] = None,
    special_tokens: Annotated[
        bool | None,
        typer.Option(
            "--special-tokens/--no-special-tokens",
            help="Add <cls>/<eos> (default: on when the vocabulary has them, as V2; off for V1).",
            show_default=False,
        ),
    ] = None,
    obs_keys: Annotated[
        str, typer.Option(help="Comma-separated obs columns to copy, e.g. 'label,dose'.")
    ] = "",
    chunk_size: Annotated[int, typer.Option(help="Cells per chunk (bounds memory).")] = 512,
    gene_id_key: Annotated[
        str, typer.Option(help="var column with Ensembl ids ('index' for var_names); versions are removed.")
    ] = "ensembl_id",
    layer: Annotated[
        str | None,
        typer.Option(help="Layer with the raw counts, e.g. 'counts' ('raw' for adata.raw); default X."),
    ] = None,
) -> None:
    """Tokenize cells exactly as Geneformer's TranscriptomeTokenizer (see `geneattn.tokenize.tokenize`).

    Without dictionaries a vocabulary is built from the input (medians of nonzero normalised
    expression) and saved as OUT/vocab.json beside the tokens. A missing obs 'n_counts' column
    is replaced by row sums of the counts, with a warning.
    """
    from ..tokenize import GeneVocab, build_vocab, geneformer_settings
    from ..tokenize import tokenize as run_tokenize

    key = None if gene_id_key == "index" else gene_id_key
    dictionaries = (token_dictionary, gene_median_dictionary, gene_mapping_dictionary)
    _check_args(input_h5ad, model_input_size, chunk_size, dictionaries)
    from .._owned import check_out_spares_inputs

    check_out_spares_inputs(out, {"the input file": input_h5ad, "dictionary": [d for d in dictionaries if d]})
    if token_dictionary is not None and gene_median_dictionary is not None:
        vocab = GeneVocab.from_geneformer(token_dictionary, gene_median_dictionary, gene_mapping_dictionary)
    else:
        logger.info("no dictionaries given: building a vocabulary from %s", input_h5ad)
        vocab = build_vocab(
            input_h5ad, gene_id_key=key, special_tokens=special_tokens is not False, layer=layer
        )
    special, size = geneformer_settings(
        vocab, special_tokens=special_tokens, model_input_size=model_input_size
    )
    run_tokenize(
        input_h5ad,
        vocab,
        out=out,
        model_input_size=size,
        special_tokens=special,
        obs_keys=[k.strip() for k in obs_keys.split(",") if k.strip()],
        chunk_size=chunk_size,
        gene_id_key=key,
        layer=layer,
    )
