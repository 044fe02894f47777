"""What the offline Kaggle kernel runs once the wheels are installed: find the data under the input
root, describe test and index on the GPU(s), search with the checkpoint's post-processing, and write
``submission.csv``. It logs each stage's time and projects the total from the first shard; when the
projection would pass the notebook limit it degrades in order: drops flip, then drops scales.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..infer.extract import extract_descriptors
from ..infer.features import describer
from ..infer.pipeline import id_rankings
from ..infer.retrieve import retrieve
from ..infer.submission import validate_submission, write_submission
from ..infer.tta import parse_scales
from ..model.net import load_checkpoint

log = logging.getLogger("solution.kernel")


def find_competition(input_root: Path) -> Path:
    """The folder under ``input_root`` that holds ``test/`` and ``index/`` (the competition's data)."""
    for candidate in sorted(p for p in input_root.iterdir() if p.is_dir()):
        if (candidate / "test").is_dir() and (candidate / "index").is_dir():
            return candidate
    raise FileNotFoundError(f"no folder under {input_root} holds test/ and index/; attach the competition data")


def find_checkpoint(input_root: Path) -> Path:
    found = sorted(input_root.glob("*/checkpoint.pt")) + sorted(input_root.glob("*/*/checkpoint.pt"))
    if not found:
        raise FileNotFoundError(f"no checkpoint.pt under {input_root}; attach the model dataset")
    return found[0]


def list_images(split_dir: Path) -> tuple[list[str], list[Path]]:
    """Ids and paths of ``split_dir/a/b/c/<id>.jpg`` (Kaggle gives no index.csv or test.csv)."""
    paths = sorted(split_dir.glob("*/*/*/*.jpg"))
    return [p.stem for p in paths], paths


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


def _describe(net, paths, infer_cfg, device, workers, desc):
    model = describer(net, infer_cfg)
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        model = torch.nn.DataParallel(model)  # each batch is split over every GPU of the kernel
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        return extract_descriptors(net, paths, infer_cfg["image_size"], infer_cfg["batch_size"], device, workers,
                                   desc=desc, forward=model)[0]


def run(input_root: Path, working: Path, limit_s: float, probe: int = 256) -> Path:
    started = time.perf_counter()
    data = find_competition(input_root)
    net, payload = load_checkpoint(find_checkpoint(input_root))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # faiss also uses every GPU
    net.to(device).eval()
    infer_cfg = payload["config"]["infer"]
    workers = min(4, os.cpu_count() or 1)
    test_ids, test_paths = list_images(data / "test")
    index_ids, index_paths = list_images(data / "index")
    total = len(test_paths) + len(index_paths)
    log.info("found %d test and %d index images in %s; %s", len(test_paths), len(index_paths), data, device)

    # Project the whole extraction from a first shard; degrade the TTA until it fits the limit.
    while True:
        shard = index_paths[:probe]
        t0 = time.perf_counter()
        _describe(net, shard, infer_cfg, device, workers, "probe")
        per_image = (time.perf_counter() - t0) / max(1, len(shard))
        projected = time.perf_counter() - started + per_image * total * 1.15  # 15% for search and writing
        log.info("projected total %.0fs for %d images with scales=%s flip=%s (limit %.0fs)", projected, total,
                 infer_cfg["scales"], infer_cfg["flip"], limit_s)
        cheaper = degrade(infer_cfg) if projected > limit_s else None
        if cheaper is None:
            break
        log.warning("projection exceeds the limit: dropping %s", "flip" if infer_cfg["flip"] else "scales")
        infer_cfg = cheaper

    t0 = time.perf_counter()
    test = _describe(net, test_paths, infer_cfg, device, workers, "test")
    log.info("stage test: %.0fs", time.perf_counter() - t0)
    t0 = time.perf_counter()
    index = _describe(net, index_paths, infer_cfg, device, workers, "index")
    log.info("stage index: %.0fs", time.perf_counter() - t0)
    t0 = time.perf_counter()
    search_cfg = copy.deepcopy(infer_cfg)
    search_cfg["label_rerank"]["enabled"] = False  # train features are not extracted in the kernel
    neighbours, _ = retrieve(test, index, search_cfg)
    log.info("stage search: %.0fs", time.perf_counter() - t0)
    rankings = id_rankings(test_ids, index_ids, np.asarray(neighbours))
    out = write_submission(working / "submission.csv", rankings, test_ids)
    problems = validate_submission(out, test_ids, index_ids)
    if problems:
        raise RuntimeError("; ".join(problems))
    log.info("wrote %s (%d rows) in %.0fs", out, len(test_ids), time.perf_counter() - started)
    return out
