"""Load a local HuggingFace-format Geneformer directory (``config.json`` + weights), and save one.

Never downloads: every call uses ``local_files_only=True``. ``pytorch_model.bin`` is read only with
``torch.load(weights_only=True)`` (no arbitrary unpickling).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, PreTrainedModel

from .._atomic import TMP_PREFIX, follow_umask
from ..errors import InputError
from ._pooling import use_pooling
from ._vocab import require_vocab
from .presets import vocab_pairing_hint

if TYPE_CHECKING:  # pragma: no cover
    from ..tokenize import GeneVocab

__all__ = ["load", "check_vocab", "check_lengths", "save_model", "TASKS"]

logger = logging.getLogger(__name__)

TASKS = {"mlm": BertForMaskedLM, "classifier": BertForSequenceClassification}

# weights of the task heads: an MLM checkpoint has no pooler/classifier, a classifier no MLM head
HEAD_PREFIXES = ("cls.", "bert.pooler.", "classifier.")
_BUFFERS = ("position_ids", "token_type_ids")  # non-persistent buffers some checkpoints still carry


def _read_config(path: Path) -> BertConfig:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        msg = f"{path} has no config.json: not a HuggingFace model directory"
        raise InputError(msg)
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = f"{cfg_path} is not readable JSON: {e}"
        raise InputError(msg) from None
    if not isinstance(raw, dict) or raw.get("model_type") != "bert":
        kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        msg = f"{cfg_path}: model_type is {kind!r}, expected 'bert' (a Geneformer/BERT checkpoint)"
        raise InputError(msg)
    try:
        return BertConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a user-fixable bad file
        msg = f"{cfg_path} is not a valid BERT config: {e}"
        raise InputError(msg) from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    st, binf = path / "model.safetensors", path / "pytorch_model.bin"
    try:
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(st)
        if binf.is_file():
            state = torch.load(binf, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                msg = f"{binf} does not hold a state dict"
                raise InputError(msg)
            return state
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt/truncated/unsafe weight files
        which = st if st.is_file() else binf
        msg = f"cannot read model weights {which}: {type(e).__name__}: {e}"
        raise InputError(msg) from None
    msg = f"{path} has no model.safetensors or pytorch_model.bin"
    raise InputError(msg)


def _task_of(config: BertConfig, task: str) -> str:
    if task not in ("auto", *TASKS):
        msg = f"task must be 'auto', 'mlm' or 'classifier', got {task!r}"
        raise InputError(msg)
    if task != "auto":
        return task
    archs = config.architectures or []
    return "classifier" if any("SequenceClassification" in a for a in archs) else "mlm"


def load(
    path: str | os.PathLike[str],
    *,
    vocab: GeneVocab | None = None,
    task: str = "auto",
    attn_implementation: str = "sdpa",
    **model_kwargs: object,
) -> PreTrainedModel:
    """Load a local Geneformer (BERT) checkpoint directory.

    Parameters
    ----------
    path
        Directory with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).
    vocab
        The tokenizer's `GeneVocab`; when given, its size must equal the model's ``vocab_size``.
    task
        ``"auto"`` (from ``config.architectures``), ``"mlm"`` (`BertForMaskedLM`) or
        ``"classifier"`` (`BertForSequenceClassification`; a pretrained MLM checkpoint gets a new,
        randomly initialised head).
    attn_implementation
        Attention kernel (``"sdpa"`` by default; ``"eager"`` for the reference implementation).
    **model_kwargs
        Passed to ``from_pretrained`` (e.g. ``num_labels``, ``id2label``, ``label2id``).

    Returns
    -------
    PreTrainedModel
        In eval mode, on the CPU.

    Raises
    ------
    InputError
        If the directory, config or weights are missing or unreadable, the vocabulary does not
        match, or a weight outside the task heads (MLM head; pooler and classifier) is missing
        from the file or not part of the model (e.g. weights holding only the embeddings).
    """
    path = Path(path)
    if not path.is_dir():
        msg = f"model directory {path} does not exist" if not path.exists() else f"{path} is not a directory"
        raise InputError(msg)
    config = _read_config(path)
    if vocab is not None:
        check_vocab(config, vocab)
    cls = TASKS[_task_of(config, task)]
    if "id2label" in model_kwargs:  # num_labels follows id2label
        model_kwargs.pop("num_labels", None)
        config.id2label = {int(k): str(v) for k, v in model_kwargs.pop("id2label").items()}
    for key, value in model_kwargs.items():
        setattr(config, key, value)
    state = _read_state_dict(path)
    emb = state.get("bert.embeddings.word_embeddings.weight", state.get("embeddings.word_embeddings.weight"))
    if emb is not None and emb.shape[0] != config.vocab_size:
        msg = f"{path}: weights have {emb.shape[0]:,} token embeddings but config.json says vocab_size {config.vocab_size:,}"
        raise InputError(msg)
    model = use_pooling(_from_state(cls, path, config, state, attn_implementation))
    model.eval()
    if cls is BertForSequenceClassification and not any(k.startswith("classifier.") for k in state):
        logger.info("new classification head (%d labels) initialised on %s", model.config.num_labels, path)
    logger.info("loaded %s from %s", cls.__name__, path)
    return model


def _from_state(
    cls: type[PreTrainedModel], path: Path, config: BertConfig, state: dict, attn_implementation: str
) -> PreTrainedModel:
    """Build ``cls`` from a state dict; weights missing or left over outside the task heads are errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _quiet_transformers():
                model, info = cls.from_pretrained(
                    None,
                    config=config,
                    state_dict=state,
                    local_files_only=True,
                    attn_implementation=attn_implementation,
                    output_loading_info=True,
                )
    except (RuntimeError, ValueError, OSError) as e:
        msg = f"cannot load {path} as {cls.__name__}: {e}"
        raise InputError(msg) from None
    for kind in ("missing", "unexpected"):
        bad = sorted(
            k for k in info[f"{kind}_keys"] if not k.startswith(HEAD_PREFIXES) and not k.endswith(_BUFFERS)
        )
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            where = "missing from" if kind == "missing" else "in"
            msg = (
                f"{path}: {len(bad)} weights of {cls.__name__} are {where} the weight file "
                f"{'' if kind == 'missing' else 'but not part of the model '}({', '.join(bad[:5])}{more}): "
                "an incomplete or mismatched checkpoint"
            )
            raise InputError(msg)
    return model


def check_vocab(config: BertConfig | PreTrainedModel, vocab: GeneVocab) -> None:
    """Raise `InputError` unless the tokenizer's vocabulary size equals the model's."""
    config = getattr(config, "config", config)
    size = require_vocab(vocab).size
    if size != config.vocab_size:
        msg = (
            f"vocabulary mismatch: the tokenizer's vocabulary has {size:,} tokens but the model expects "
            f"{config.vocab_size:,}. Tokenizer: {vocab_pairing_hint(size)}; model: "
            f"{vocab_pairing_hint(config.vocab_size)}. Re-tokenize with the dictionaries that pair with the model."
        )
        raise InputError(msg)


def check_lengths(
    config: BertConfig | PreTrainedModel, max_length: int, max_token_id: int | None = None
) -> None:
    """Raise `InputError` if tokens are longer than the model's positions or use ids beyond its vocabulary."""
    config = getattr(config, "config", config)
    if max_length > config.max_position_embeddings:
        msg = (
            f"cells have up to {max_length} tokens but the model has only {config.max_position_embeddings} "
            "positions; re-tokenize with a smaller --model-input-size"
        )
        raise InputError(msg)
    if max_token_id is not None and max_token_id >= config.vocab_size:
        msg = (
            f"token id {max_token_id} is outside the model's vocabulary ({config.vocab_size:,} tokens): "
            f"the tokens were made with another vocabulary ({vocab_pairing_hint(config.vocab_size)} for the model)"
        )
        raise InputError(msg)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars (geneattn shows its own)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the load report lists the new head's keys; we log it ourselves
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was:
            hf_logging.enable_progress_bar()


def save_model(model: PreTrainedModel, out: str | os.PathLike[str]) -> Path:
    """Save ``model`` as ``config.json`` + ``model.safetensors`` into ``out`` (kept alongside other files).

    Files are written to a temporary sibling directory and renamed in: the weights first, then
    ``config.json``, so a directory with a ``config.json`` always has matching weights.
    """
    import shutil
    import tempfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "model-", dir=out))
    try:
        model = getattr(model, "module", model)
        with _quiet_transformers():
            model.save_pretrained(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        follow_umask(*(tmp / n for n in names))
        for name in [n for n in names if n != "config.json"] + ["config.json"]:
            (tmp / name).replace(out / name)
        stale = out / "pytorch_model.bin"
        if stale.exists():
            stale.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
