"""Descriptor extraction: aspect-ratio buckets, parallel decoding, N x D float32 output."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import EvalDataset, bucket_batches, collate_eval, worker_init
from ..data.images import warn_unreadable
from ..model.net import RetrievalNet

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_descriptors(net: RetrievalNet, paths: list[Path], image_size: int, batch_size: int = 32,
                        device: str | torch.device = "cpu", workers: int = 2, desc: str = "extract",
                        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        warned: set[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N x D float32 descriptors, N ok-flags). Unreadable images get a zero row.

    ``forward`` (default: ``net``) maps a batch of images to N x D rows, e.g. the
    pooled descriptor before whitening, or flattened region vectors.
    """
    dataset = EvalDataset(paths, image_size)
    device = torch.device(device)
    if device.type == "cpu":
        # Decoding here, between forwards: the forward already keeps every core busy, and forked workers would
        # turn each write to the heap the forward reuses (runtime.keep_freed_memory) into a copy-on-write page
        # fault. lite0 at 3 scales on the 2-core machine: 36 img/s here against 20-25 with 2 workers.
        workers = 0
    loader = DataLoader(dataset, batch_sampler=bucket_batches(dataset.sizes, batch_size), num_workers=workers,
                        collate_fn=collate_eval, pin_memory=device.type == "cuda", worker_init_fn=worker_init)
    forward = forward or net
    was_training = net.training
    net.eval()
    out: np.ndarray | None = None
    ok = np.zeros(len(paths), bool)
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        # One device-to-host copy every few batches, not a synchronisation after each of them.
        nonlocal out
        for descriptors, indices, flags in pending:
            descriptors = descriptors.float().cpu().numpy()
            descriptors[~flags.numpy()] = 0.0
            if out is None:
                out = np.zeros((len(paths), descriptors.shape[1]), np.float32)
            out[indices.numpy()] = descriptors
            ok[indices.numpy()] = flags.numpy()
        pending.clear()

    with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        for images, indices, flags in loader:
            pending.append((forward(images.to(device, non_blocking=True)), indices, flags))
            if len(pending) >= 16:
                flush()
            bar.update(len(indices))
        flush()
    net.train(was_training)
    if out is None:
        out = np.zeros((0, net.dim), np.float32)
    if not ok.all() and warn_unreadable([paths[i] for i in np.flatnonzero(~ok)], warned):
        log.warning("%d of %d images were unreadable and got a zero descriptor", (~ok).sum(), len(ok))
    return out, ok
