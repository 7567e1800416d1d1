"""One explicit settings object (device, progress bars, n_jobs) and `override()`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

__all__ = ["Settings", "settings", "override"]


@dataclasses.dataclass
class Settings:
    """Process-wide defaults; every function also takes these as explicit parameters.

    Attributes
    ----------
    device
        Torch device for model work (``"cpu"``, ``"cuda"``, ``"auto"``).
    progress
        Show progress bars on long loops.
    n_jobs
        Worker threads for CPU work (torch intra-op threads); ``None`` leaves torch's default.
    """

    device: str = "auto"
    progress: bool = True
    n_jobs: int | None = None

    def resolved_device(self) -> str:
        """The concrete device: ``"cuda"`` when ``device="auto"`` and a GPU is visible, else ``"cpu"``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


settings = Settings()


@contextlib.contextmanager
def override(**kwargs: Any) -> Iterator[Settings]:
    """Temporarily change settings: ``with override(progress=False): ...``."""
    old = dataclasses.asdict(settings)
    unknown = set(kwargs) - set(old)
    if unknown:
        msg = f"unknown settings: {sorted(unknown)}"
        raise TypeError(msg)
    try:
        for k, v in kwargs.items():
            setattr(settings, k, v)
        yield settings
    finally:
        for k, v in old.items():
            setattr(settings, k, v)
