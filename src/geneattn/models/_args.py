"""Settings every training run shares (`TrainArgs`), its fingerprint and its ``train_log.json``."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from .._atomic import write_json
from ..errors import InputError

__all__ = ["TrainArgs", "fingerprint", "write_train_log"]

# settings that change neither the model nor the numbers a resumed run produces
_NOT_FINGERPRINTED = ("device", "keep_checkpoints", "save_steps", "eval_batch_size", "baselines", "n_boot")


@dataclasses.dataclass
class TrainArgs:
    """Optimisation settings shared by `PretrainConfig` and `FinetuneConfig` (which extend it).

    Attributes
    ----------
    epochs
        Passes over the training cells.
    batch_size
        Cells per step and process.
    learning_rate
        Peak AdamW learning rate (of the encoder, when a task has a separate head rate).
    weight_decay
        AdamW weight decay (not applied to biases and LayerNorm weights).
    warmup_steps, warmup_ratio
        Linear warm-up length: ``warmup_steps``, or when it is None ``warmup_ratio`` of all steps;
        then linear decay to zero.
    max_grad_norm
        Gradient clipping (0 disables).
    keep_checkpoints
        Checkpoints kept in ``out/checkpoints`` (the run resumes from the newest).
    device
        Torch device; None uses ``geneattn.settings``.
    """

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    keep_checkpoints: int = 1
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                msg = f"{name} must be >= 1, got {getattr(self, name)}"
                raise InputError(msg)
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            msg = f"learning_rate must be a finite number > 0, got {self.learning_rate!r}"
            raise InputError(msg)
        if (
            not (math.isfinite(self.weight_decay) and math.isfinite(self.max_grad_norm))
            or min(self.weight_decay, self.max_grad_norm) < 0
        ):
            msg = f"weight_decay and max_grad_norm must be finite and >= 0, got {self.weight_decay!r}, {self.max_grad_norm!r}"
            raise InputError(msg)
        if not 0 <= self.warmup_ratio < 1 or (self.warmup_steps is not None and self.warmup_steps < 0):
            msg = "warmup_ratio must be in [0, 1) and warmup_steps >= 0"
            raise InputError(msg)


def fingerprint(kind: str, args: TrainArgs, *, seed: int, world_size: int, **extra: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the run's kind, settings, seed, data and processes.

    Settings that do not change the numbers (device, checkpoints kept, evaluation batch size, ...)
    are left out, so a run may resume on another device or keep more checkpoints.
    """
    config = {k: v for k, v in dataclasses.asdict(args).items() if k not in _NOT_FINGERPRINTED}
    return {"kind": kind, "config": config, "seed": seed, "world_size": world_size, **extra}


def write_train_log(
    out: Path,
    task: str,
    args: TrainArgs,
    *,
    seed: int,
    world_size: int,
    started: float,
    state: Any,
    **extra: Any,
) -> None:
    """Write ``out/train_log.json``: settings, steps, wall time, throughput, loss history and ``extra``.

    ``state`` is the loop's `LoopState` (``step``, ``history``, ``extra["throughput"]``); ``started``
    a `time.perf_counter` reading taken when the run began.
    """
    body: dict[str, Any] = {
        "task": task,
        "config": dataclasses.asdict(args),
        "seed": seed,
        "world_size": world_size,
        "steps": state.step,
        "seconds_this_run": round(time.perf_counter() - started, 3),
        "throughput": state.extra.get("throughput"),
    }
    body.update(extra)
    body["history"] = state.history
    write_json(out / "train_log.json", body)
