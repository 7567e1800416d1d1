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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from .._atomic import TMP_PREFIX, atomic_dir, write_json
from .._progress import progress
from .._settings import settings
from ..errors import InputError
from ._load import save_model
from ._throughput import Throughput

if TYPE_CHECKING:  # pragma: no cover
    from ._args import TrainArgs

__all__ = [
    "Dist",
    "distributed",
    "LoopSpec",
    "LoopState",
    "TrainTask",
    "run_loop",
    "latest_checkpoint",
    "autocast",
]

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


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
    """Optimisation settings of one run (from `TrainArgs` via `from_args`).

    ``rates`` gives some parameters their own peak learning rate: ``(name prefix, rate)`` pairs,
    the first matching prefix wins (e.g. a new head, the token embeddings); all other parameters
    train at ``learning_rate``. Every rate follows the same warm-up and decay.
    """

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
    rates: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_args(
        cls,
        args: TrainArgs,
        *,
        seed: int,
        desc: str,
        save_steps: int = 0,
        rates: tuple[tuple[str, float], ...] = (),
    ) -> LoopSpec:
        """The spec of a run with settings ``args``."""
        return cls(
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            warmup_ratio=args.warmup_ratio,
            max_grad_norm=args.max_grad_norm,
            save_steps=save_steps,
            keep_checkpoints=args.keep_checkpoints,
            seed=seed,
            desc=desc,
            rates=rates,
        )


@dataclasses.dataclass
class LoopState:
    """What a checkpoint records besides weights and optimizer state."""

    step: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    stopped: bool = False
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)


class TrainTask(Protocol):
    """What `run_loop` trains: batches, a loss per batch and an end-of-epoch hook.

    ``lengths`` holds the token count of every cell (indexed like the batches), for throughput.
    """

    lengths: np.ndarray

    def batches_for_epoch(self, epoch: int) -> list[np.ndarray]:
        """Batches (cell indices) of this process for ``epoch``; every epoch has the same number."""
        ...

    def step(self, module: torch.nn.Module, batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """The loss of one batch (``generator`` drives masking; dropout uses the global seed)."""
        ...

    def on_epoch_end(self, epoch: int, state: LoopState) -> bool:
        """Evaluate (module in eval mode); return True to stop early."""
        ...


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a CUDA device that supports it; a no-op elsewhere (CPU: float32 throughout)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _param_groups(model: torch.nn.Module, spec: LoopSpec) -> list[dict[str, Any]]:
    """AdamW groups by peak learning rate (`LoopSpec.rates`); no weight decay on biases and LayerNorm weights.

    Frozen parameters are left out; every group keeps its peak rate as ``peak_lr``.
    """
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = next((rate for prefix, rate in spec.rates if name.startswith(prefix)), spec.learning_rate)
        decay = not (p.ndim < 2 or "LayerNorm" in name)
        groups.setdefault((lr, decay), []).append(p)
    return [
        {"params": params, "weight_decay": spec.weight_decay if decay else 0.0, "peak_lr": lr}
        for (lr, decay), params in sorted(groups.items())
    ]


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
    task: TrainTask,
    *,
    spec: LoopSpec,
    ckpt_dir: Path,
    env: Dist,
    fingerprint: dict[str, Any],
) -> LoopState:
    """Train ``model`` (through ``module``, which computes the loss) and checkpoint; resume if possible.

    Every epoch ends with ``task.on_epoch_end`` (which may stop the run) and a checkpoint; every
    ``spec.save_steps`` steps (0: never) a checkpoint is written mid-epoch too. The measured
    throughput of the first steps is kept in ``state.extra["throughput"]``.
    """
    steps_per_epoch = len(task.batches_for_epoch(0))
    if steps_per_epoch == 0:
        msg = "too few cells for one batch per process; lower the batch size"
        raise InputError(msg)
    total = spec.epochs * steps_per_epoch
    warmup = spec.warmup_steps if spec.warmup_steps is not None else math.ceil(spec.warmup_ratio * total)
    model.to(env.device)
    opt = torch.optim.AdamW(_param_groups(model, spec), lr=spec.learning_rate)
    state = LoopState(fingerprint=fingerprint)
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        state = _load_checkpoint(last, model, opt, fingerprint)
    wrapped = module
    if env.world_size > 1:
        ids = [env.device.index] if env.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
    module.train()
    bar = progress(total, desc=spec.desc, unit="step", initial=state.step, enabled=env.is_main)
    meter = Throughput()
    with torch.random.fork_rng(devices=[]):
        while state.step < total and not state.stopped:
            epoch = state.step // steps_per_epoch
            for batch in task.batches_for_epoch(epoch)[state.step % steps_per_epoch :]:
                meter.start()
                loss = _train_step(wrapped, module, opt, task, batch, state.step, total, warmup, spec, env)
                state.step += 1
                value = env.mean(float(loss))
                lr = spec.learning_rate * _lr_factor(state.step - 1, total, warmup)
                state.history.append({"step": state.step, "epoch": epoch, "loss": value, "lr": lr})
                n_tokens = int(task.lengths[batch].sum()) * env.world_size
                meter.stop(n_cells=len(batch) * env.world_size, n_tokens=n_tokens, last=state.step == total)
                if meter.result is not None:
                    state.extra["throughput"] = meter.result
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
                _after_step(state)
                at_epoch_end = state.step % steps_per_epoch == 0
                if not at_epoch_end and spec.save_steps > 0 and state.step % spec.save_steps == 0:
                    _checkpoint(ckpt_dir, model, opt, state, spec, env)
            module.eval()
            if task.on_epoch_end(epoch, state):
                state.stopped = True
            module.train()
            _checkpoint(ckpt_dir, model, opt, state, spec, env)
    bar.close()
    module.eval()
    return state


def _train_step(
    wrapped: torch.nn.Module,
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    task: TrainTask,
    batch: np.ndarray,
    step: int,
    total: int,
    warmup: int,
    spec: LoopSpec,
    env: Dist,
) -> torch.Tensor:
    """One optimizer step; returns the (detached) loss."""
    factor = _lr_factor(step, total, warmup)
    for group in opt.param_groups:
        group["lr"] = group["peak_lr"] * factor
    # re-seed per step: dropout and masking do not depend on where a run was resumed
    step_seed = (spec.seed * 1_000_003 + step) * 64 + env.rank
    torch.manual_seed(step_seed)
    gen = torch.Generator().manual_seed(step_seed + 1)
    with autocast(env.device):
        loss = task.step(wrapped, batch, gen)
    loss.backward()
    if spec.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), spec.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def _checkpoint(
    ckpt_dir: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: LoopState,
    spec: LoopSpec,
    env: Dist,
) -> None:
    if env.is_main:
        _save_checkpoint(ckpt_dir, model, opt, state, spec.keep_checkpoints)
    env.barrier()


def _after_step(state: LoopState) -> None:
    """Hook called after every optimizer step (tests replace it to simulate a killed run)."""
