"""The kernel's time plan: will describing every image and searching fit the notebook's limit, and if not,
which settings go first?

Extraction is projected from a timed probe of fresh images (after a warm-up, so neither start-up costs nor
files already in the page cache bias it). Search, query expansion, DBA and label re-ranking cost grows with
the number of (query, database) pairs times the dimension; one timed slice on the real device gives the
seconds per pair-dimension, and the plan multiplies it by the pairs each enabled step compares. The clock
counts from the notebook's start (the install included), not from the run's.

**The ladder.** While the plan is over the limit, one setting is given up at a time, the one that saves the
most seconds per unit of mAP@100 it is expected to cost (:data:`MAP_COST`). The seconds come from this
notebook's own measurements (extraction from a line fitted to its probes against the views x pixels x
members each computes, so a decode-bound notebook learns that fewer scales save little; search by the
pairs it compares), so the order follows the data: at the 2021 size DBA's 761,757^2 pairs make it
the first search step to go, while on a small index extra scales go first. Steps that lowered mAP on our
data (diffusion, SuperGlobal) cost nothing to drop and go before anything else. Extraction settings are
probed again after each change; search settings are priced without a probe. Writing and validating the
submission and DBA's spill file are timed on a sample and priced too, and :data:`RESERVE_S` is kept free
beyond the margin. When even the cheapest plan is over the limit the log says so ("no plan fits") before
extraction, and the cheapest plan runs.
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
# Kept free beyond the margin: the notebook saves its output after the script ends, and a run that ends
# one minute past the limit scores nothing.
RESERVE_S = 600.0
MIN_IMAGE_SIZE = 256  # the image-size steps stop here (GLDv2 landmarks are small below it)
SIZE_STEP = 0.75  # each image-size step multiplies the side by this (about half the pixels in two steps)
# Expected mAP@100 lost by giving a setting up: the paired gains of the validation-chosen ablation on the toy
# (`python -m solution ablate --config toy --skip flip` on the default checkpoint, GeM trained with sub-center
# ArcFace, docs/results/ablation-toy.json, selection set: the validation queries; a test keeps these equal to
# that file): multi-scale (split over the two extra scales), alpha-QE, DBA and label re-ranking; diffusion and
# SuperGlobal lowered validation mAP, so dropping them costs nothing. Not measured here, and stated as priors:
# flip, one image-size step, one ensemble member.
MAP_COST = {"flip": 0.010, "scale": 0.0372 / 2, "image_size": 0.030, "qe": 0.0260, "dba": 0.0282,
            "label_rerank": 0.0129, "diffusion": 0.0, "superglobal": 0.0, "member": 0.030}
EXTRACTION_STEPS = ("flip", "scale", "image_size", "member")


@dataclass(frozen=True)
class Schedule:
    """Projected seconds, all from the notebook's start."""

    elapsed_s: float
    per_image_s: float
    images_left: int
    search_s: float
    limit_s: float
    other_s: float = 0.0  # writing and validating the submission, DBA's spill file
    reserve_s: float = 0.0  # kept free beyond the margin (RESERVE_S in the kernel)

    @property
    def extract_s(self) -> float:
        return self.per_image_s * self.images_left

    @property
    def total_s(self) -> float:
        return self.elapsed_s + (self.extract_s + self.search_s + self.other_s) * MARGIN + self.reserve_s

    @property
    def fits(self) -> bool:
        return self.total_s <= self.limit_s

    def summary(self) -> str:
        return (f"plan: {self.elapsed_s:.0f}s spent + {self.images_left} images x {self.per_image_s * 1000:.1f} ms "
                f"= {self.extract_s:.0f}s extraction + {self.search_s:.0f}s search/QE/DBA/votes + "
                f"{self.other_s:.0f}s writing/validation/spill, x{MARGIN:.2f} margin, + {self.reserve_s:.0f}s reserve "
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
    if infer_cfg.get("superglobal", {}).get("enabled"):
        pairs += float(n_query) * infer_cfg["superglobal"]["m"] * infer_cfg["superglobal"]["k"]
    if infer_cfg["label_rerank"]["enabled"] and n_train:
        pairs += float(n_query + n_index) * n_train  # label votes from the train descriptors
    return pairs


def time_search_unit(dim: int, build: Callable[[np.ndarray], object],
                     search: Callable[[object, np.ndarray, int], object], dtype: str = "float32",
                     clock: Callable[[], float] = time.perf_counter, n_index: int = 20_000,
                     n_query: int = 2_000) -> float:
    """Seconds per (query, database) pair per dimension of exact search, timed on a warmed-up slice held as
    the run holds it: ``build`` makes the index (the upload to the devices, in the index's ``dtype``, so the
    float16 tensor-core path is what is timed) before the clock starts, and only ``search`` is timed."""
    rng = np.random.default_rng(0)
    database = rng.standard_normal((n_index, dim), dtype=np.float32).astype(dtype)
    queries = rng.standard_normal((n_query, dim), dtype=np.float32)
    index = build(database)
    search(index, queries[:64], 10)  # warm-up: GPU context, BLAS threads, kernels chosen
    started = clock()
    search(index, queries, 100)
    return max(clock() - started, 1e-9) / (float(n_index) * n_query * dim)


def time_output_units(write_rows: Callable[[int], None], spill_dir: str | None, rows: int = 2_000,
                      spill_bytes: int = 64 * 2**20, clock: Callable[[], float] = time.perf_counter
                      ) -> tuple[float, float]:
    """(seconds per submission row written and validated, seconds per byte of DBA's spill file written and
    read back), timed on ``rows`` rows through ``write_rows`` and ``spill_bytes`` in ``spill_dir``."""
    import tempfile  # noqa: PLC0415

    started = clock()
    write_rows(rows)
    per_row = (clock() - started) / rows
    block = np.ones(spill_bytes, np.uint8)
    started = clock()
    with tempfile.TemporaryFile(dir=spill_dir, prefix="plan-spill-") as spill:
        spill.write(block.tobytes())
        spill.flush()
        spill.seek(0)
        spill.readinto(memoryview(block))
    per_byte = (clock() - started) / spill_bytes
    return per_row, per_byte


def output_seconds(n_query: int, n_index: int, dim: int, infer_cfg: dict, per_row: float, per_byte: float) -> float:
    """Writing and validating the submission's ``n_query`` rows, and DBA's spill (every index row written
    to disk and read back) when DBA runs."""
    seconds = n_query * per_row
    if infer_cfg["dba"]["enabled"]:
        itemsize = np.dtype(infer_cfg["index"].get("dtype", "float32")).itemsize
        seconds += float(n_index) * dim * itemsize * per_byte
    return seconds


def active_weights(infer_cfg: dict, weights: list[float]) -> list[float]:
    """The ensemble members' weights with the dropped ones (``infer_cfg['dropped_members']``) at 0."""
    dropped = set(infer_cfg.get("dropped_members", []))
    return [0.0 if i in dropped else w for i, w in enumerate(weights)]


def extraction_cost(infer_cfg: dict, weights: list[float] | None = None) -> float:
    """Relative forward cost of describing one image: views x pixels over every scale x members described."""
    views = 2 if infer_cfg["flip"] else 1
    pixels = sum(s * s for s in parse_scales(infer_cfg["scales"])) * float(infer_cfg["image_size"]) ** 2
    members = sum(1 for w in active_weights(infer_cfg, weights or [1.0]) if w > 0)
    return views * pixels * members


def cheaper_options(infer_cfg: dict, weights: list[float] | None = None) -> list[tuple[str, dict]]:
    """Every setting that could be given up next, each as (step name, the config without it)."""
    options = []

    def option(step: str, change: Callable[[dict], None]) -> None:
        cheaper = copy.deepcopy(infer_cfg)
        change(cheaper)
        options.append((step, cheaper))

    if infer_cfg["flip"]:
        option("flip", lambda c: c.update(flip=False))
    scales = parse_scales(infer_cfg["scales"])
    if len(scales) > 1:
        # the largest scale that is not 1 goes first: it holds the most pixels
        drop = max((i for i in range(len(scales)) if scales[i] != 1.0), key=lambda i: scales[i],
                   default=len(scales) - 1)
        option("scale", lambda c: c.update(scales=[s for i, s in enumerate(c["scales"]) if i != drop]))
    smaller = max(MIN_IMAGE_SIZE, int(round(infer_cfg["image_size"] * SIZE_STEP / 32) * 32))
    if smaller < infer_cfg["image_size"]:
        option("image_size", lambda c: c.update(image_size=smaller))
    for step in ("diffusion", "superglobal", "dba", "qe", "label_rerank"):
        if infer_cfg.get(step, {}).get("enabled"):
            option(step, lambda c, step=step: c[step].update(enabled=False))
    active = [i for i, w in enumerate(active_weights(infer_cfg, weights or [])) if w > 0]
    if len(active) > 1:
        weakest = min(active, key=lambda i: weights[i])
        option("member", lambda c: c.update(dropped_members=sorted({*c.get("dropped_members", []), weakest})))
    return options


def _step_summary(step: str, infer_cfg: dict) -> str:
    if step == "scale":
        return f"a scale (now {infer_cfg['scales']})"
    if step == "image_size":
        return f"image size (now {infer_cfg['image_size']} px)"
    if step == "member":
        return f"ensemble member(s) {infer_cfg['dropped_members']}"
    return step


def per_image_model(probes: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of seconds per image = a + b x extraction cost, from the probes so far ((cost, seconds) pairs).
    One probe: all of it scales with the cost (a = 0). Two or more costs: a least-squares line, both terms
    kept >= 0, so decoding (a) that does not shrink with fewer pixels is not counted as saved."""
    costs = np.array([c for c, _ in probes], float)
    seconds = np.array([t for _, t in probes], float)
    if len(set(costs.tolist())) < 2:
        return 0.0, float(seconds.mean() / max(costs.mean(), 1e-12))
    b, a = np.polyfit(costs, seconds, 1)
    if b < 0:  # more pixels were not slower: nothing extraction can give up saves time
        return float(seconds.mean()), 0.0
    if a < 0:
        return 0.0, float(np.sum(costs * seconds) / np.sum(costs * costs))
    return float(a), float(b)


def _saved_s(plan: Schedule, cheaper: dict, model: tuple[float, float], search_s: Callable[[dict], float],
             weights: list[float] | None, other_s: Callable[[dict], float] = lambda cfg: 0.0) -> float:
    """Projected seconds ``cheaper`` saves against ``plan``: extraction from the per-image model, search
    priced by its pairs, writing and spill by their bytes."""
    a, b = model
    extract = min(plan.per_image_s, a + b * extraction_cost(cheaper, weights)) * plan.images_left
    return max(0.0, plan.extract_s + plan.search_s + plan.other_s - extract - search_s(cheaper) - other_s(cheaper))


def choose_schedule(infer_cfg: dict, per_image: Callable[[dict], float], search_s: Callable[[dict], float],
                images_left: int, elapsed: Callable[[], float], limit_s: float,
                weights: list[float] | None = None,
                other_s: Callable[[dict], float] = lambda cfg: 0.0,
                reserve_s: float = RESERVE_S) -> tuple[dict, list[Schedule]]:
    """The richest settings whose plan fits, giving one setting up at a time while the plan says it does not.

    ``per_image(cfg)`` times a fresh probe with ``cfg``; ``search_s(cfg)`` prices its search; ``elapsed()``
    is the notebook's clock; ``weights`` are an ensemble's member weights; ``other_s(cfg)`` prices writing,
    validation and DBA's spill (:func:`output_seconds`); ``reserve_s`` is kept free. Returns the chosen config and
    every plan made, in order (the last is the chosen one's)."""
    plans: list[Schedule] = []
    per = per_image(infer_cfg)
    probes = [(extraction_cost(infer_cfg, weights), per)]
    while True:
        plan = Schedule(elapsed(), per, images_left, search_s(infer_cfg), limit_s, other_s(infer_cfg), reserve_s)
        plans.append(plan)
        log.info("%s with image_size=%s scales=%s flip=%s", plan.summary(), infer_cfg["image_size"],
                 infer_cfg["scales"], infer_cfg["flip"])
        if plan.fits:
            return infer_cfg, plans
        options = cheaper_options(infer_cfg, weights)
        if not options:
            log.warning("no plan fits: even the cheapest is projected past the limit (%.0fs of %.0fs, %.0fs "
                        "reserve included); running the cheapest", plan.total_s, limit_s, reserve_s)
            return infer_cfg, plans

        model = per_image_model(probes)
        saved = {step: _saved_s(plan, cheaper, model, search_s, weights, other_s) for step, cheaper in options}
        # a step that costs no mAP and saves time goes first; then the most seconds per mAP
        step, cheaper = max(options, key=lambda o: (MAP_COST[o[0]] == 0 and saved[o[0]] > 0,
                                                    saved[o[0]] / max(MAP_COST[o[0]], 1e-6)))
        log.warning("the plan exceeds the limit: dropping %s (saves about %.0fs for an expected %.3f mAP@100)",
                    _step_summary(step, cheaper), saved[step] * MARGIN, MAP_COST[step])
        infer_cfg = cheaper
        if step in EXTRACTION_STEPS:
            per = per_image(infer_cfg)
            probes.append((extraction_cost(infer_cfg, weights), per))
