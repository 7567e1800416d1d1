"""A small, deterministic, resumable training loop (CPU-friendly; DDP under ``torchrun``).

Why our own loop rather than HF ``Trainer``: it is short, bit-for-bit deterministic on CPU for a
fixed seed (dropout and masking are re-seeded from ``(seed, step, rank)`` at every step, so a
resumed run equals an uninterrupted one), and checkpoints are plain HF model directories.

Distributed: under ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1) the process group is
created (gloo on CPU, nccl on GPUs), the model is wrapped in ``DistributedDataParallel``, every
process takes its own share of each epoch's batches, and only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .._atomic import TMP_PREFIX, atomic_dir, write_json
from .._settings import settings
from ..errors import InputError
from ._load import save_model

__all__ = [
    "Dist",
    "distributed",
    "LoopSpec",
    "LoopState",
    "run_loop",
    "latest_checkpoint",
    "check_training_args",
]

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


def check_training_args(cfg: Any, positive: tuple[str, ...]) -> None:
    """Validate the settings every training config shares (`PretrainConfig`, `FinetuneConfig`).

    ``positive`` names integer fields that must be >= 1; ``learning_rate`` must be > 0,
    ``weight_decay`` and ``max_grad_norm`` >= 0, ``warmup_ratio`` in [0, 1) and ``warmup_steps`` >= 0.
    """
    for name in positive:
        if int(getattr(cfg, name)) < 1:
            msg = f"{name} must be >= 1, got {getattr(cfg, name)}"
            raise InputError(msg)
    if cfg.learning_rate <= 0 or cfg.weight_decay < 0 or cfg.max_grad_norm < 0:
        msg = "learning_rate must be > 0, weight_decay and max_grad_norm >= 0"
        raise InputError(msg)
    if not 0 <= cfg.warmup_ratio < 1 or (cfg.warmup_steps is not None and cfg.warmup_steps < 0):
        msg = "warmup_ratio must be in [0, 1) and warmup_steps >= 0"
        raise InputError(msg)


@dataclasses.dataclass(frozen=True)
class Dist:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op when single-process)."""
        if self.world_size > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a scalar across processes."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


@contextlib.contextmanager
def distributed(device: str | None = None) -> Iterator[Dist]:
    """Join the ``torchrun`` process group if ``WORLD_SIZE`` > 1 (creating it once per process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device or settings.resolved_device())
    if world > 1 and not dist.is_initialized():
        # kept for the life of the process (torchrun ends it): re-creating a group after
        # destroying it in the same process is unreliable (gloo reconnects to stale ports)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        atexit.register(_destroy)
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        rank = 0
    yield Dist(rank=rank, world_size=world, device=dev)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclasses.dataclass
class LoopSpec:
    """Optimisation settings shared by pretraining and fine-tuning."""

    epochs: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int | None
    warmup_ratio: float
    max_grad_norm: float
    save_steps: int
    keep_checkpoints: int
    seed: int
    desc: str = "train"


@dataclasses.dataclass
class LoopState:
    """What a checkpoint records besides weights and optimizer state."""

    step: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    stopped: bool = False
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and LayerNorm weights (HF convention); frozen parameters left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete ``step-*`` checkpoint under ``ckpt_dir`` (None if there is none)."""
    if not ckpt_dir.is_dir():
        return None
    found = [
        p
        for p in ckpt_dir.iterdir()
        if p.name.startswith("step-") and not p.name.startswith(TMP_PREFIX) and (p / STATE_FILE).is_file()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _save_checkpoint(
    ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: LoopState, keep: int
) -> None:
    with atomic_dir(ckpt_dir / f"step-{state.step:08d}") as tmp:
        save_model(model, tmp)
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / STATE_FILE, dataclasses.asdict(state))
    olds = sorted(
        (p for p in ckpt_dir.glob("step-*") if (p / STATE_FILE).is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    for p in olds[: max(0, len(olds) - max(1, keep))]:
        shutil.rmtree(p, ignore_errors=True)


def _load_checkpoint(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, fingerprint: dict
) -> LoopState:
    from safetensors.torch import load_file

    raw = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    state = LoopState(**raw)
    if state.fingerprint != json.loads(json.dumps(fingerprint)):
        diff = sorted(
            k
            for k in set(state.fingerprint) | set(fingerprint)
            if state.fingerprint.get(k) != fingerprint.get(k)
        )
        msg = (
            f"{path.parent} holds checkpoints of a different run (differs in {diff}); "
            "use a new output directory or delete the checkpoints to start over"
        )
        raise InputError(msg)
    weights = load_file(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    real_missing = [k for k in missing if not k.endswith(("decoder.weight", "decoder.bias"))]  # tied
    if real_missing or unexpected:
        msg = f"checkpoint {path} does not match the model (missing {real_missing[:3]}, unexpected {unexpected[:3]})"
        raise InputError(msg)
    opt.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    logger.info("resuming from %s (step %d)", path, state.step)
    return state


def run_loop(
    model: torch.nn.Module,
    module: torch.nn.Module,
    *,
    batches_for_epoch: Callable[[int], list[np.ndarray]],
    step_fn: Callable[[torch.nn.Module, np.ndarray, torch.Generator], torch.Tensor],
    spec: LoopSpec,
    ckpt_dir: Path,
    env: Dist,
    fingerprint: dict[str, Any],
    on_epoch_end: Callable[[int, LoopState], bool] | None = None,
) -> LoopState:
    """Train ``model`` (through ``module``, which computes the loss) and checkpoint; resume if possible.

    ``batches_for_epoch(epoch)`` gives this process's batches (cell indices) for an epoch; every
    epoch must have the same number. ``step_fn(module, batch, generator)`` returns the loss.
    ``on_epoch_end(epoch, state)`` may evaluate and return True to stop early.
    """
    steps_per_epoch = len(batches_for_epoch(0))
    if steps_per_epoch == 0:
        msg = "too few cells for one batch per process; lower the batch size"
        raise InputError(msg)
    total = spec.epochs * steps_per_epoch
    warmup = spec.warmup_steps if spec.warmup_steps is not None else math.ceil(spec.warmup_ratio * total)
    model.to(env.device)
    opt = torch.optim.AdamW(_param_groups(model, spec.weight_decay), lr=spec.learning_rate)
    state = LoopState(fingerprint=fingerprint)
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        state = _load_checkpoint(last, model, opt, fingerprint)
    wrapped = module
    if env.world_size > 1:
        ids = [env.device.index] if env.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
    module.train()
    bar = tqdm(
        total=total, initial=state.step, desc=spec.desc, disable=not (settings.progress and env.is_main)
    )
    with torch.random.fork_rng(devices=[]):
        while state.step < total and not state.stopped:
            epoch = state.step // steps_per_epoch
            batches = batches_for_epoch(epoch)
            for batch in batches[state.step % steps_per_epoch :]:
                lr = _lr_at(state.step, total, warmup, spec.learning_rate)
                for group in opt.param_groups:
                    group["lr"] = lr
                # re-seed per step: dropout and masking do not depend on where a run was resumed
                step_seed = (spec.seed * 1_000_003 + state.step) * 64 + env.rank
                torch.manual_seed(step_seed)
                gen = torch.Generator().manual_seed(step_seed + 1)
                loss = step_fn(wrapped, batch, gen)
                loss.backward()
                if spec.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), spec.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                state.step += 1
                value = env.mean(float(loss.detach()))
                state.history.append({"step": state.step, "epoch": epoch, "loss": value, "lr": lr})
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
                _after_step(state)
                at_epoch_end = state.step % steps_per_epoch == 0
                if not at_epoch_end and spec.save_steps > 0 and state.step % spec.save_steps == 0:
                    _checkpoint(ckpt_dir, model, opt, state, spec, env)
            module.eval()
            if on_epoch_end is not None and on_epoch_end(epoch, state):
                state.stopped = True
            module.train()
            _checkpoint(ckpt_dir, model, opt, state, spec, env)
    bar.close()
    module.eval()
    return state


def _checkpoint(ckpt_dir: Path, model, opt, state: LoopState, spec: LoopSpec, env: Dist) -> None:  # noqa: ANN001
    if env.is_main:
        _save_checkpoint(ckpt_dir, model, opt, state, spec.keep_checkpoints)
    env.barrier()


def _after_step(state: LoopState) -> None:
    """Hook called after every optimizer step (tests replace it to simulate a killed run)."""
