"""Retrieval on a competition: describe index and test images, search, rank, score."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..competition import Competition
from ..config import run_dir
from ..data.gldv2 import image_path, read_solution, read_train_clean
from ..metrics import score_with_intervals
from ..model.net import RetrievalNet, load_checkpoint, place
from ..runtime import data_workers, resolve_device
from .extract import extract_descriptors
from .features import features, split_ids
from .retrieve import needs_train, retrieve
from .search import knn

Describe = Callable[[list[Path], str], np.ndarray]


def describe_split(net: RetrievalNet, comp: Competition, data_root: str | Path, split: str, infer_cfg: dict,
                   device: torch.device, workers: int, describe: Describe | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """A split's descriptors at a single scale, by ``describe(paths, desc)`` when given (e.g. sharded over
    torchrun's ranks and gathered), else in this process."""
    ids = split_ids(comp, data_root, split)
    paths = [image_path(comp.data_dir(data_root), split, i) for i in ids]
    if describe is not None:
        return describe(paths, f"describe {split}"), ids
    descriptors, _ = extract_descriptors(net, paths, infer_cfg["image_size"], infer_cfg["batch_size"], device,
                                         workers, desc=f"describe {split}")
    return descriptors, ids


def id_rankings(query_ids: list[str], index_ids: list[str], neighbours: np.ndarray) -> dict[str, list[str]]:
    """{query id: index ids}, best first, from rows of index positions (-1 marks an empty slot)."""
    return {q: [index_ids[j] for j in row if j >= 0] for q, row in zip(query_ids, neighbours)}


def rank(query: np.ndarray, query_ids: list[str], index: np.ndarray, index_ids: list[str],
         k: int) -> dict[str, list[str]]:
    """{query id: top-k index ids}, best first."""
    return id_rankings(query_ids, index_ids, knn(query, index, k)[1])


def run_net(cfg: dict, checkpoint: str | Path | None = None) -> tuple[RetrievalNet, torch.device]:
    """The run's trained net (or ``checkpoint``), on the configured device, in eval mode."""
    device = resolve_device(cfg["run"]["device"])
    net, _ = load_checkpoint(checkpoint or run_dir(cfg) / "checkpoint.pt")
    return place(net, device).eval(), device


def search_competition(net: RetrievalNet, comp: Competition, cfg: dict, infer_cfg: dict,
                       device: torch.device, queries: str = "test"
                       ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Describe the ``queries`` split (test, or val where the competition has one) and index as ``infer_cfg``
    says (train too, with labels, when label re-ranking is on), search and post-process. Returns
    (neighbours, scores, query ids, index ids)."""
    data_root, out_root, workers = cfg["data"]["root"], run_dir(cfg) / "features", data_workers(cfg["run"]["workers"])
    index, index_ids = features(net, comp, data_root, "index", out_root, infer_cfg, device, workers,
                                infer_cfg["index"]["dtype"])
    test, test_ids = features(net, comp, data_root, queries, out_root, infer_cfg, device, workers)
    train, labels = train_votes(net, comp, cfg, infer_cfg, device) if needs_train(infer_cfg) else (None, None)
    neighbours, scores = retrieve(test, index, infer_cfg, train, labels, in_place=True)  # index is ours
    return neighbours, scores, test_ids, index_ids


def train_votes(net: RetrievalNet, comp: Competition, cfg: dict, infer_cfg: dict, device: torch.device
                ) -> tuple[np.ndarray, np.ndarray]:
    """The run's train descriptors (cached with its other splits) and their landmark ids: what label
    re-ranking votes with."""
    data_root = cfg["data"]["root"]
    train, train_ids = features(net, comp, data_root, "train", run_dir(cfg) / "features", infer_cfg, device,
                                data_workers(cfg["run"]["workers"]))
    return train, train_labels(comp, data_root, train_ids)


def train_labels(comp: Competition, data_root: str | Path, train_ids: list[str]) -> np.ndarray:
    """The train-clean landmark id of each of ``train_ids``, in order (what label re-ranking votes with)."""
    labels = read_train_clean(comp.csv_path(data_root, "train_clean_csv")).set_index("id")["landmark_id"]
    return labels.loc[train_ids].to_numpy()


def solution_key(queries: str) -> str:
    """The competition.yaml key of a query split's ground truth: test's is GLDv2's ``solution_csv``."""
    return "solution_csv" if queries == "test" else f"{queries}_solution_csv"


def has_split(comp: Competition, queries: str) -> bool:
    """Whether the competition lists a ``queries`` split with its ground truth (the toy's val does)."""
    return f"{queries}_csv" in comp.data and solution_key(queries) in comp.data


def solution_intervals(comp: Competition, data_root: str | Path, rankings: dict[str, list[str]],
                       queries: str = "test") -> dict[str, dict]:
    """Per part (Public, Private, all): mAP@k, its 95% bootstrap interval, query count and per-query APs,
    against the ``queries`` split's ground truth; {} without it on disk."""
    if not has_split(comp, queries):
        return {}
    path = comp.csv_path(data_root, solution_key(queries))
    if not path.is_file():
        return {}
    return score_with_intervals(rankings, read_solution(path), comp.metric["k"])


def evaluate_net(net: RetrievalNet, comp: Competition, data_root: str | Path, infer_cfg: dict,
                 device: torch.device, workers: int, describe: Describe | None = None,
                 score: bool = True, queries: tuple[str, ...] = ("test", "val")) -> dict[str, dict[str, dict]]:
    """{query split: :func:`solution_intervals`} of ``net`` at a single scale, for each of ``queries`` the
    competition has (test and validation by default; all searched against the same index, described once).
    Every rank calls it with a sharded ``describe``; only the one with ``score`` searches and scores."""
    index, index_ids = describe_split(net, comp, data_root, "index", infer_cfg, device, workers, describe)
    out = {}
    for split in [q for q in queries if q == "test" or has_split(comp, q)]:
        queries, query_ids = describe_split(net, comp, data_root, split, infer_cfg, device, workers, describe)
        if score:
            out[split] = solution_intervals(comp, data_root, rank(queries, query_ids, index, index_ids,
                                                                  comp.metric["k"]), split)
    return out
