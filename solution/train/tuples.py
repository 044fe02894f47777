"""What one epoch trains on: the train/validation split, the mined tuples, and the batch order.

Everything here is a pure function of (seed, epoch, descriptors), so a resumed
run, or every rank of a DDP run, derives the same plan.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..competition import Competition
from ..config import ConfigError
from ..data.datasets import header_sizes, target_size
from ..data.gldv2 import check_images_exist, image_path, read_train, read_train_clean
from .mining import random_negatives, select_negatives

log = logging.getLogger(__name__)


@dataclass
class TrainSet:
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray

    def subset(self, indices: np.ndarray) -> TrainSet:
        return TrainSet([self.ids[i] for i in indices], [self.paths[i] for i in indices], self.labels[indices])


@dataclass
class ValSet:
    """Held-out train landmarks as a small retrieval task: one query per landmark, the rest as index."""

    paths: list[Path]
    labels: np.ndarray
    queries: np.ndarray
    index: np.ndarray


@dataclass
class Epoch:
    """The tuples of one epoch (indices into the train set), their batch shapes, and mining statistics."""

    tuples: list[list[int]]
    shapes: list[tuple[int, int]]
    stats: dict = field(default_factory=dict)

    def to_state(self) -> dict:
        return {"tuples": self.tuples, "shapes": [list(s) for s in self.shapes], "stats": self.stats}

    @classmethod
    def from_state(cls, state: dict) -> Epoch:
        return cls([list(t) for t in state["tuples"]], [tuple(s) for s in state["shapes"]], dict(state["stats"]))


def load_train_set(comp: Competition, data_root: str | Path, train_list: str) -> TrainSet:
    key = {"clean": "train_clean_csv", "full": "train_csv"}[train_list]
    csv_path = comp.csv_path(data_root, key)
    frame: pd.DataFrame = read_train_clean(csv_path) if train_list == "clean" else read_train(csv_path)
    ids = frame["id"].tolist()
    check_images_exist(comp.data_dir(data_root), "train", ids, csv_path)
    return TrainSet(ids, [image_path(comp.data_dir(data_root), "train", i) for i in ids],
                    frame["landmark_id"].to_numpy())


def count_spare_landmarks(train: TrainSet) -> int:
    """How many landmarks may be held out for validation: half of those with 2+ images."""
    _, counts = np.unique(train.labels, return_counts=True)
    return int((counts >= 2).sum()) // 2


def split_validation(train: TrainSet, n_landmarks: int, seed: int) -> tuple[TrainSet, ValSet | None]:
    """Hold out ``n_landmarks`` landmarks (with 2+ images) from training for per-epoch validation."""
    if n_landmarks <= 0:
        return train, None
    rng = np.random.default_rng([seed, 11])
    labels, counts = np.unique(train.labels, return_counts=True)
    eligible = int((counts >= 2).sum())
    if n_landmarks > count_spare_landmarks(train):  # the rest must stay to train on
        raise ConfigError(f"train.val_landmarks={n_landmarks}, but the train set has {eligible} landmarks with 2+ "
                          f"images and at most half of them ({eligible // 2}) can be held out; lower it (0: none)")
    held = rng.choice(labels[counts >= 2], n_landmarks, replace=False)
    is_val = np.isin(train.labels, held)
    val_idx = np.flatnonzero(is_val)
    val_labels = train.labels[val_idx]
    queries = np.array([np.flatnonzero(val_labels == lab)[0] for lab in held])
    index = np.setdiff1d(np.arange(len(val_idx)), queries)
    val = ValSet([train.paths[i] for i in val_idx], val_labels, queries, index)
    return train.subset(np.flatnonzero(~is_val)), val


def epoch_image_size(tcfg: dict, epoch: int) -> int:
    """The longest training side in ``epoch`` (0-based): ``train.size_schedule``'s entry in force, else
    ``train.image_size``."""
    size = tcfg["image_size"]
    for first, scheduled in tcfg.get("size_schedule") or []:
        if epoch + 1 >= first:
            size = scheduled
    return size


def uses_triplet(tcfg: dict) -> bool:
    return "triplet" in tcfg.get("loss", "triplet")


def uses_arcface(tcfg: dict) -> bool:
    return "arcface" in tcfg.get("loss", "triplet")


def image_shapes(paths: list[Path], longest: int, buckets: bool) -> list[tuple[int, int]]:
    """(width, height) each image is trained at: its aspect-ratio bucket, or a square."""
    if not buckets:
        return [(longest, longest)] * len(paths)
    return [target_size(*(size or (longest, longest)), longest) for size in header_sizes(paths)]


Describe = Callable[[list[int]], np.ndarray]


def nearest_positives(query_desc: np.ndarray, candidates: list[np.ndarray], described: dict[int, np.ndarray],
                      k: int, rng: np.random.Generator) -> np.ndarray:
    """Per query, one of the ``k`` candidates (train indices: its landmark's other images) most similar to it
    (the most similar with k=1), by the descriptors in ``described``."""
    chosen = []
    for q, options in zip(query_desc, candidates):
        similarity = np.stack([described[int(i)] for i in options]) @ q
        best = options[np.argsort(-similarity, kind="stable")[:k]]
        chosen.append(best[rng.integers(len(best))] if len(best) > 1 else best[0])
    return np.asarray(chosen, np.int64)


def draw_epoch(train: TrainSet, shapes: list[tuple[int, int]], cfg: dict, seed: int, epoch: int,
               describe: Describe | None) -> Epoch:
    """Sample queries with a positive of their landmark; take negatives mined with ``describe`` (or random).

    ``describe`` maps train indices to L2-normalised descriptors with the current net. With a triplet term
    (``train.loss``) and hard negatives, queries and pool are described; with ``train.positives=nearest``,
    every other image of the queries' landmarks too, of which the nearest becomes the positive. ArcFace alone
    takes random negatives: they are only more labelled images for it. Distance statistics come from the
    training pass.
    """
    rng = np.random.default_rng([seed, epoch])
    by_label: dict[int, np.ndarray] = {int(lab): np.flatnonzero(train.labels == lab) for lab in np.unique(train.labels)}
    eligible = np.concatenate([idx for idx in by_label.values() if len(idx) >= 2])
    queries = rng.choice(eligible, min(cfg["tuples_per_epoch"], len(eligible)), replace=False)
    candidates = [by_label[int(train.labels[q])][by_label[int(train.labels[q])] != q] for q in queries]
    positives = np.array([rng.choice(options) for options in candidates])
    pool = rng.choice(len(train.paths), min(cfg["pool_size"], len(train.paths)), replace=False)
    stats: dict = {}
    hard = cfg["negatives"] == "hard" and uses_triplet(cfg) and describe is not None  # ArcFace alone needs none
    nearest = cfg["positives"] == "nearest" and describe is not None
    started = time.perf_counter()
    if hard or nearest:
        unique = np.unique(np.concatenate([queries, *([pool] if hard else []), *(candidates if nearest else [])]))
        desc = describe(unique.tolist())
        described = {int(i): desc[r] for r, i in enumerate(unique)}
        q_desc = np.stack([described[int(i)] for i in queries])
    if nearest:  # drawn at random above all the same, so the negatives' random numbers stay as they were
        positives = nearest_positives(q_desc, candidates, described, cfg["positive_k"], rng)
        short = sum(len(options) < cfg["positive_k"] for options in candidates)
        if short:
            log.warning("epoch %d: train.positive_k=%d is more than the other images of the landmark for %d of %d "
                        "queries: they choose among all %s", epoch, cfg["positive_k"], short, len(queries),
                        "of them (the nearest is no longer preferred)" if short == len(queries) else "they have")
    if hard:
        pool_desc = np.stack([described[int(i)] for i in pool])
        negatives = select_negatives(q_desc, train.labels[queries], pool_desc, train.labels[pool], cfg["neg_num"])
    else:
        negatives = random_negatives(train.labels[queries], train.labels[pool], cfg["neg_num"], rng)
    if hard or nearest:
        stats = {"mine_s": time.perf_counter() - started}
    tuples = [[int(q), int(p), *(int(pool[n]) for n in negs)]
              for q, p, negs in zip(queries, positives, negatives) if (negs >= 0).all()]
    if not tuples:  # every query lacked neg_num negatives of distinct other landmarks: nothing to train on
        landmarks = len(np.unique(train.labels[pool]))
        raise ConfigError(f"train.neg_num={cfg['neg_num']} negatives of distinct landmarks cannot be found for any "
                          f"query in a pool of {len(pool)} images from {landmarks} landmarks; lower train.neg_num "
                          "or raise train.pool_size")
    if len(queries) < cfg["tuples_per_epoch"] or len(tuples) < len(queries):
        log.warning("epoch %d: %d tuples, not train.tuples_per_epoch=%d (%d images have a positive of their "
                    "landmark; %d queries lacked %d negatives of distinct landmarks in the pool)", epoch, len(tuples),
                    cfg["tuples_per_epoch"], len(eligible), len(queries) - len(tuples), cfg["neg_num"])
    return Epoch(tuples, [shapes[t[0]] for t in tuples], stats)


def epoch_batches(plan: Epoch, tuples_per_step: int, world: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches (lists of tuple positions) in a seeded order, one per optimiser step; each batch shares
    one shape.

    A global batch holds ``tuples_per_step`` tuples over all ranks together, and rank r trains on
    ``batch[r::world]`` (in micro-batches of ``train.tuples_per_forward``). A batch is cut to a multiple of
    ``world`` (dropped when smaller), so every rank trains on as many tuples, and runs as many micro-batches,
    as the others: DDP's gradient reduction needs them in step.
    """
    if tuples_per_step < world:
        raise ConfigError(f"train.tuples_per_step={tuples_per_step} is below the {world} ranks of this run: each "
                          f"rank needs at least one tuple per step; set train.tuples_per_step >= {world}")
    if len(plan.tuples) < tuples_per_step:
        log.warning("epoch %d has %d tuples, fewer than train.tuples_per_step=%d: its one step is that small; "
                    "lower train.tuples_per_step or raise train.tuples_per_epoch", epoch, len(plan.tuples),
                    tuples_per_step)
    rng = np.random.default_rng([seed, epoch, 5])
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position in rng.permutation(len(plan.tuples)):
        groups[plan.shapes[position]].append(int(position))
    size = tuples_per_step
    batches = [members[i:i + size] for _, members in sorted(groups.items()) for i in range(0, len(members), size)]
    batches = [b[:len(b) // world * world] for b in batches if len(b) >= world]  # equal shares on every rank
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches(batch: list[int], rank: int, world: int, tuples_per_forward: int) -> list[list[int]]:
    """Rank ``rank``'s share of a global batch, in forwards of at most ``tuples_per_forward`` tuples."""
    share = batch[rank::world]
    return [share[i:i + tuples_per_forward] for i in range(0, len(share), tuples_per_forward)]
