"""Retrieval on a competition: describe index and test images, search, rank, score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..competition import Competition
from ..data.gldv2 import image_path, read_solution
from ..metrics import score_submission
from ..model.net import RetrievalNet
from .extract import extract_descriptors
from .features import split_ids
from .search import knn


def describe_split(net: RetrievalNet, comp: Competition, data_root: str | Path, split: str, infer_cfg: dict,
                   device: torch.device, workers: int) -> tuple[np.ndarray, list[str]]:
    ids = split_ids(comp, data_root, split)
    paths = [image_path(comp.data_dir(data_root), split, i) for i in ids]
    descriptors, _ = extract_descriptors(net, paths, infer_cfg["image_size"], infer_cfg["batch_size"], device,
                                         workers, desc=f"describe {split}")
    return descriptors, ids


def rank(query: np.ndarray, query_ids: list[str], index: np.ndarray, index_ids: list[str],
         k: int) -> dict[str, list[str]]:
    """{query id: top-k index ids}, best first."""
    _, neighbours = knn(query, index, k)
    return {q: [index_ids[j] for j in row if j >= 0] for q, row in zip(query_ids, neighbours)}


def solution_scores(comp: Competition, data_root: str | Path, rankings: dict[str, list[str]]) -> dict[str, float]:
    """mAP@k (Public, Private, all) when the competition's ground truth is on disk, else {}."""
    path = comp.csv_path(data_root, "solution_csv")
    if not path.is_file():
        return {}
    return score_submission(rankings, read_solution(path), comp.metric["k"])


def evaluate_net(net: RetrievalNet, comp: Competition, data_root: str | Path, infer_cfg: dict,
                 device: torch.device, workers: int) -> dict[str, float]:
    index, index_ids = describe_split(net, comp, data_root, "index", infer_cfg, device, workers)
    test, test_ids = describe_split(net, comp, data_root, "test", infer_cfg, device, workers)
    return solution_scores(comp, data_root, rank(test, test_ids, index, index_ids, comp.metric["k"]))
