"""Process-level set-up: logging, device choice, seeding."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from .config import ConfigError
from .torchrun import launch


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Libraries that narrate their own start-up at INFO.
    for noisy in ("faiss.loader", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The configured device; under torchrun (LOCAL_RANK set) ``auto`` and ``cuda`` mean this process's own
    GPU, cuda:LOCAL_RANK, so that N processes do not all run on GPU 0."""
    if local_rank is None and launch().launched:
        local_rank = launch().local_rank
    if name in ("auto", "cuda") and torch.cuda.is_available() and local_rank is not None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name} but no CUDA device is visible; use run.device=cpu or auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device={name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"run.device={name} but only {torch.cuda.device_count()} CUDA devices are visible")
    return device


def data_workers(configured: int | None) -> int:
    """``run.workers``, or when null the node's CPU cores shared by its processes: under torchrun one per GPU
    (16 cores, 8 GPUs: 2 each); a single process, which drives every GPU itself, gets them all (4 on Kaggle)."""
    if configured is not None:
        return configured
    return max(1, (os.cpu_count() or 1) // max(1, launch().local_world))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
