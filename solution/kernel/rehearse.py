"""The public run's memory rehearsal: what the hidden scoring run will hold on each GPU, at its counts.

Kaggle swaps in the hidden test set (117,577 images) and the full index (761,757) only in the scoring rerun,
whose log nobody sees; an index that does not fit, or a search block that runs out of memory, would first
fail there. So the public run works out, stage by stage, what each GPU holds at the hidden counts (the
index slice held on the device, a query chunk and its score block, the float16 path's rescoring gather,
DBA's blocks over the index, the train descriptors' slice or stream for the label votes) with the search
code's own sizes (:mod:`solution.infer.search`). On GPUs it then builds each stage's index at the hidden
count, from synthetic rows, and searches one query chunk through it, logging the measured peak beside the
projection; on the CPU (``kernel-dryrun``) it logs the projection for the cards the kernel asks for. When a
stage could not fit a card, the run stops with one line before any extraction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..infer.search import block_rows, rows_per_chunk, shortlist_size
from .contract import KernelError

log = logging.getLogger("solution.kernel")

GPU_SCORE_BYTES = 2**30  # a block's score matrix on a GPU (search._blocked_top_k)
RESCORE_BYTES = 2**28  # the float32 rows the rescoring gathers at once (search._rescore)
HOLD_SHARE = 0.5  # a slice is held on its GPU when it takes at most this share of the free memory
T4_USABLE_BYTES = 15_843_721_216  # what a 16 GB T4 reports (torch.cuda.get_device_properties)
CONTEXT_BYTES = int(0.5 * 2**30)  # the CUDA context and the allocator's slack, beside the tensors


def fill_unit_rows(out: np.ndarray, seed: int, chunk: int = 50_000) -> np.ndarray:
    """``out`` filled with random L2-normalised rows, a chunk at a time (no full-size float32 temporary)."""
    rng = np.random.default_rng(seed)
    for start in range(0, len(out), chunk):
        rows = rng.standard_normal((min(chunk, len(out) - start), out.shape[1]), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:start + len(rows)] = rows
    return out


@dataclass(frozen=True)
class Stage:
    """One search stage at the hidden counts: ``queries`` rows searched against ``database`` rows."""

    name: str
    queries: int
    database: int
    k: int


def hidden_stages(n_query: int, n_index: int, n_train: int, infer_cfg: dict) -> list[Stage]:
    """The exact searches the hidden run makes, in order, with their sizes."""
    topk = infer_cfg.get("topk", 100)
    stages = []
    label = infer_cfg["label_rerank"]
    if label["enabled"] and n_train:
        stages.append(Stage("label votes (train descriptors)", n_query + n_index, n_train, label["k"]))
    if infer_cfg["dba"]["enabled"]:
        stages.append(Stage("DBA (index against index)", n_index, n_index, infer_cfg["dba"]["k"] + 1))
    stages.append(Stage("search (test against index)", n_query, n_index, topk))
    return stages


def stage_bytes(stage: Stage, dim: int, itemsize: int, devices: int, device_bytes: int, half: bool) -> dict:
    """What one GPU holds while ``stage`` runs, by the search code's own sizes: its database slice (held when
    it takes at most half the card, else streamed a block at a time), one query chunk (float32, plus its
    float16 copy on the tensor-core path), the block's score matrix, the running top-k, and the float32
    rescoring gather."""
    slice_rows = math.ceil(stage.database / devices)
    slice_bytes = slice_rows * dim * itemsize
    held = slice_bytes <= HOLD_SHARE * (device_bytes - CONTEXT_BYTES)
    chunk = min(stage.queries, rows_per_chunk(dim))
    block = block_rows(rows_per_chunk(dim), slice_rows, chunk, GPU_SCORE_BYTES)
    keep = min(shortlist_size(stage.k), slice_rows) if half else min(stage.k, slice_rows)
    parts = {
        "database": slice_bytes if held else block * dim * itemsize,
        "queries": chunk * dim * (4 + (2 if half else 0)),
        "scores": chunk * block * 4,
        "top-k": 2 * chunk * 2 * keep * (4 + 8),  # the running and the block's lists, concatenated, and sorted
        "rescoring": 2 * min(RESCORE_BYTES, chunk * keep * dim * 4) if half else 0,
    }
    return {"held": held, "slice_bytes": slice_bytes, "parts": parts, "total": sum(parts.values()) + CONTEXT_BYTES}


def rehearse(n_query: int, n_index: int, n_train: int, dim: int, infer_cfg: dict,
             run_stage: Callable[[Stage], list[int]] | None = None, cards: list[tuple[str, int, bool]] | None = None
             ) -> list[dict]:
    """The projection for every stage on every card, and, with ``run_stage`` (a GPU is there), the peak
    bytes each GPU measured running one query chunk of the stage at its hidden size. ``cards``: (name,
    bytes, has tensor cores) per GPU, default Kaggle's two T4s. Raises :class:`KernelError` with one line
    when a stage could not fit."""
    cards = cards or [("Tesla T4 (projected)", T4_USABLE_BYTES, True)] * 2
    itemsize = np.dtype(infer_cfg["index"].get("dtype", "float32")).itemsize
    smallest = min(total for _, total, _ in cards)
    half = itemsize == 2 and all(tensor_cores for _, _, tensor_cores in cards)
    rows = []
    for stage in hidden_stages(n_query, n_index, n_train, infer_cfg):
        projected = stage_bytes(stage, dim, itemsize, len(cards), smallest, half)
        measured = run_stage(stage) if run_stage is not None else None
        peak = max(measured) if measured else projected["total"]
        row = {"stage": stage.name, "queries": stage.queries, "database": stage.database,
               "held": projected["held"], "projected_gib": projected["total"] / 2**30,
               "measured_gib": max(measured) / 2**30 if measured else None, "card_gib": smallest / 2**30}
        rows.append(row)
        how = (f"measured {row['measured_gib']:.2f} GiB (projected {row['projected_gib']:.2f})" if measured
               else f"projected {row['projected_gib']:.2f} GiB")
        log.info("memory rehearsal, %s: %d x %d at %d-D, database slice %s (%.2f GiB a GPU over %d): %s of "
                 "%.2f GiB on %s", stage.name, stage.queries, stage.database, dim,
                 "held on the GPU" if projected["held"] else "streamed", projected["slice_bytes"] / 2**30,
                 len(cards), how, row["card_gib"], cards[0][0])
        if peak > smallest:
            raise KernelError(f"the hidden run could not fit its {stage.name}: {peak / 2**30:.2f} GiB on a "
                              f"{smallest / 2**30:.2f} GiB card ({stage.queries} x {stage.database} at {dim}-D); "
                              "lower infer.index.dtype to float16 or pick a larger card (MACHINE_SHAPE)")
    return rows


def gpu_cards() -> list[tuple[str, int, bool]]:
    """(name, total bytes, has tensor cores) of each visible GPU."""
    import torch  # noqa: PLC0415

    cards = []
    for gpu in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(gpu)
        cards.append((props.name, props.total_memory, props.major >= 7))
    return cards


def gpu_stage_runner(dim: int, dtype: str, seed: int = 0) -> Callable[[Stage], list[int]]:
    """Builds a stage's database at its hidden size from synthetic unit rows, holds it on the GPUs as the
    search does, searches one query chunk through it and returns each GPU's peak allocated bytes (the CUDA
    context is not counted by torch: :data:`CONTEXT_BYTES` stands for it)."""
    import torch  # noqa: PLC0415

    from ..infer.search import ExactIndex, search  # noqa: PLC0415

    def run(stage: Stage) -> list[int]:
        devices = range(torch.cuda.device_count())
        for gpu in devices:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(gpu)
        database = fill_unit_rows(np.empty((stage.database, dim), dtype), seed)
        queries = fill_unit_rows(np.empty((min(stage.queries, rows_per_chunk(dim)), dim), np.float32), seed + 1)
        index = ExactIndex(database)
        search(index, queries, stage.k)
        peaks = [torch.cuda.max_memory_allocated(gpu) + CONTEXT_BYTES for gpu in devices]
        del index, database
        torch.cuda.empty_cache()
        return peaks

    return run
