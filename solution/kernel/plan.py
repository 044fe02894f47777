"""The kernel's time plan: will describing every image and searching fit the notebook's limit?

Extraction is projected from a timed probe of fresh images (after a warm-up, so neither start-up costs nor
files already in the page cache bias it). Search, query expansion, DBA and label re-ranking cost grows with
the number of (query, database) pairs times the dimension; one timed slice on the real device gives the
seconds per pair-dimension, and the plan multiplies it by the pairs each enabled step compares.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..infer.tta import parse_scales

log = logging.getLogger("solution.kernel")

MARGIN = 1.10  # decoding speed drifts over hours; leave a tenth of the projection spare


@dataclass(frozen=True)
class Plan:
    """Projected seconds, all from the start of the run."""

    elapsed_s: float
    per_image_s: float
    images_left: int
    search_s: float
    limit_s: float

    @property
    def extract_s(self) -> float:
        return self.per_image_s * self.images_left

    @property
    def total_s(self) -> float:
        return self.elapsed_s + (self.extract_s + self.search_s) * MARGIN

    @property
    def fits(self) -> bool:
        return self.total_s <= self.limit_s

    def describe(self) -> str:
        return (f"plan: {self.elapsed_s:.0f}s spent + {self.images_left} images x {self.per_image_s * 1000:.1f} ms "
                f"= {self.extract_s:.0f}s extraction + {self.search_s:.0f}s search/QE/DBA, x{MARGIN:.2f} margin "
                f"-> {self.total_s:.0f}s of {self.limit_s:.0f}s ({'fits' if self.fits else 'too long'})")


def compared_pairs(n_query: int, n_index: int, n_train: int, infer_cfg: dict) -> float:
    """(query, database) pairs the enabled search steps compare, each at the descriptor dimension."""
    pairs = float(n_query) * n_index  # the first search
    if infer_cfg["qe"]["enabled"]:
        pairs += float(n_query) * n_index  # the search with expanded queries
    if infer_cfg["dba"]["enabled"]:
        pairs += float(n_index) * n_index  # every index image against the index
    if infer_cfg["diffusion"]["enabled"]:
        pairs += float(n_index) * n_index  # the kNN graph of the index
    if infer_cfg["label_rerank"]["enabled"] and n_train:
        pairs += float(n_query + n_index) * n_train  # label votes from the train descriptors
    return pairs


def time_search_unit(dim: int, knn: Callable[[np.ndarray, np.ndarray, int], object],
                     clock: Callable[[], float] = time.perf_counter, n_index: int = 20_000,
                     n_query: int = 2_000) -> float:
    """Seconds per (query, database) pair per dimension of exact search, timed on a warmed-up slice."""
    rng = np.random.default_rng(0)
    database = rng.standard_normal((n_index, dim), dtype=np.float32)
    queries = rng.standard_normal((n_query, dim), dtype=np.float32)
    knn(queries[:64], database[:1000], 10)  # warm-up: faiss GPU resources, BLAS threads
    started = clock()
    knn(queries, database, 100)
    return max(clock() - started, 1e-9) / (float(n_index) * n_query * dim)


def degrade(infer_cfg: dict) -> dict | None:
    """The next cheaper TTA: without flip, then with fewer scales; None when nothing is left to drop."""
    cheaper = copy.deepcopy(infer_cfg)
    scales = parse_scales(infer_cfg["scales"])
    if infer_cfg["flip"]:
        cheaper["flip"] = False
    elif len(scales) > 1:
        cheaper["scales"] = [1]
    else:
        return None
    return cheaper


def choose_tta(infer_cfg: dict, per_image: Callable[[dict], float], search_s: float, images_left: int,
               elapsed: Callable[[], float], limit_s: float) -> tuple[dict, list[Plan]]:
    """The richest TTA whose plan fits, dropping flip then scales only while the plan says it does not.

    ``per_image(cfg)`` times a fresh probe with ``cfg``; ``elapsed()`` is the run's clock. Returns the chosen
    config and every plan made, in order (the last is the chosen one's)."""
    plans = []
    while True:
        per = per_image(infer_cfg)  # first: the probe's own time is spent time
        plan = Plan(elapsed(), per, images_left, search_s, limit_s)
        plans.append(plan)
        log.info("%s with scales=%s flip=%s", plan.describe(), infer_cfg["scales"], infer_cfg["flip"])
        if plan.fits:
            return infer_cfg, plans
        cheaper = degrade(infer_cfg)
        if cheaper is None:
            log.warning("even the cheapest TTA is projected past the limit; running it anyway")
            return infer_cfg, plans
        log.warning("the plan exceeds the limit: dropping %s", "flip" if infer_cfg["flip"] else "scales")
        infer_cfg = cheaper
