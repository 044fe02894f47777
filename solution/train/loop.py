"""The training run: tuples built each epoch (hard negatives mined with the current net),
triplet loss, Adam with a x10 head, per-epoch checkpoints that resume, metrics and curves.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..competition import Competition, load_competition
from ..config import run_dir, save_config
from ..data.datasets import TupleDataset, train_augmentation
from ..data.gldv2 import check_images_exist, image_path, read_train, read_train_clean
from ..infer.extract import extract_descriptors
from ..infer.pipeline import evaluate_net
from ..model.net import RetrievalNet, build_net, load_checkpoint, save_checkpoint
from ..runtime import resolve_device, seed_everything
from ..viz import training_curves
from .loss import triplet_loss
from .mining import random_negatives, select_negatives

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainSet:
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray


def load_train_set(comp: Competition, data_root: str | Path, train_list: str) -> TrainSet:
    key = {"clean": "train_clean_csv", "full": "train_csv"}[train_list]
    csv_path = comp.csv_path(data_root, key)
    frame: pd.DataFrame = read_train_clean(csv_path) if train_list == "clean" else read_train(csv_path)
    ids = frame["id"].tolist()
    check_images_exist(comp.data_dir(data_root), "train", ids, csv_path)
    return TrainSet(ids, [image_path(comp.data_dir(data_root), "train", i) for i in ids],
                    frame["landmark_id"].to_numpy())


def freeze_batchnorm(module: nn.Module) -> None:
    """BatchNorm statistics stay at their pretrained values (tiny batches would ruin them)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def make_optimizer(net: RetrievalNet, cfg: dict) -> torch.optim.Optimizer:
    no_decay = set(map(id, getattr(net.head, "no_decay_parameters", list)()))
    head_decay = [p for p in net.head.parameters() if id(p) not in no_decay]
    head_plain = [p for p in net.head.parameters() if id(p) in no_decay]
    head_lr, decay = cfg["lr"] * cfg["head_lr_mult"], cfg["weight_decay"]
    groups = [{"params": list(net.backbone.parameters()), "lr": cfg["lr"], "weight_decay": decay},
              {"params": head_decay, "lr": head_lr, "weight_decay": decay},
              {"params": head_plain, "lr": head_lr, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.Adam(groups)


def build_tuples(net: RetrievalNet, train: TrainSet, cfg: dict, rng: np.random.Generator,
                 device: torch.device, workers: int) -> tuple[list[list[Path]], dict]:
    """Sample queries with a positive of their landmark, pick negatives; return tuples and mining stats."""
    by_label: dict[int, np.ndarray] = {}
    for label in np.unique(train.labels):
        by_label[int(label)] = np.flatnonzero(train.labels == label)
    eligible = np.concatenate([idx for idx in by_label.values() if len(idx) >= 2])
    queries = rng.choice(eligible, min(cfg["tuples_per_epoch"], len(eligible)), replace=False)
    positives = np.array([rng.choice(by_label[int(train.labels[q])][by_label[int(train.labels[q])] != q])
                          for q in queries])
    pool = rng.choice(len(train.paths), min(cfg["pool_size"], len(train.paths)), replace=False)
    stats: dict = {}
    if cfg["negatives"] == "hard":
        started = time.perf_counter()
        unique = np.unique(np.concatenate([queries, positives, pool]))
        desc, _ = extract_descriptors(net, [train.paths[i] for i in unique], cfg["image_size"], 32, device,
                                      workers, desc="mine")
        row = {int(i): r for r, i in enumerate(unique)}
        q_desc = desc[[row[int(i)] for i in queries]]
        p_desc = desc[[row[int(i)] for i in positives]]
        pool_desc = desc[[row[int(i)] for i in pool]]
        negatives = select_negatives(q_desc, train.labels[queries], pool_desc, train.labels[pool], cfg["neg_num"])
        d_pos = ((q_desc - p_desc) ** 2).sum(1)
        valid = negatives >= 0
        d_neg = ((q_desc[:, None, :] - pool_desc[np.maximum(negatives, 0)]) ** 2).sum(-1)
        stats = {"mine_s": time.perf_counter() - started, "d_pos": float(d_pos.mean()),
                 "d_neg": float(d_neg[valid].mean()),
                 "easy_frac": float((d_neg[valid] > (d_pos[:, None] + cfg["margin"]).repeat(cfg["neg_num"], 1)[valid])
                                    .mean())}
    else:
        negatives = random_negatives(train.labels[queries], train.labels[pool], cfg["neg_num"], rng)
    tuples = []
    for q, p, negs in zip(queries, positives, negatives):
        if (negs < 0).any():
            continue
        tuples.append([train.paths[q], train.paths[p], *[train.paths[pool[n]] for n in negs]])
    return tuples, stats


def train_one_epoch(net: RetrievalNet, loader: DataLoader, optimizer: torch.optim.Optimizer, cfg: dict,
                    device: torch.device, epoch: int) -> float:
    net.train()
    freeze_batchnorm(net.backbone)
    losses = []
    with tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False) as bar:
        for batch in bar:
            b, n = batch.shape[:2]
            descriptors = net(batch.flatten(0, 1).to(device, non_blocking=True)).view(b, n, -1)
            loss = triplet_loss(descriptors[:, 0], descriptors[:, 1], descriptors[:, 2:], cfg["margin"])
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} in epoch {epoch + 1}; the last good checkpoint "
                                       "is kept; lower train.lr and run again")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    return float(np.mean(losses)) if losses else math.nan


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(cfg: dict) -> dict:
    """Run (or resume) training as configured; returns a summary with mAP before and after."""
    out = run_dir(cfg)
    checkpoint_path = out / "checkpoint.pt"
    comp = load_competition(cfg["competition"])
    data_root = cfg["data"]["root"]
    device = resolve_device(cfg["run"]["device"])
    workers = cfg["run"]["workers"]
    tcfg = cfg["train"]
    seed_everything(cfg["run"]["seed"])
    save_config(cfg, out / "config.yaml")

    state: dict = {}
    if checkpoint_path.is_file():
        net, state = load_checkpoint(checkpoint_path)
        if state.get("epoch", 0) >= tcfg["epochs"]:
            log.info("run %s already finished %d epochs; nothing to do (delete %s to retrain)",
                     cfg["run"]["name"], state["epoch"], checkpoint_path)
            return {"checkpoint": checkpoint_path, "finished": True, **state.get("summary", {})}
        log.info("resuming %s after epoch %d", cfg["run"]["name"], state["epoch"])
    else:
        net = build_net(cfg["model"])
    net.to(device)
    train_set = load_train_set(comp, data_root, cfg["data"]["train_list"])
    optimizer = make_optimizer(net, tcfg)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=tcfg["lr_decay"])
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
    summary = dict(state.get("summary", {}))
    if tcfg["eval_before"] and "map_before" not in summary:
        summary["map_before"] = evaluate_net(net, comp, data_root, cfg["infer"], device, workers).get("all")
        log.info("test mAP@100 before training: %s", _fmt(summary["map_before"]))
    augment = train_augmentation(tcfg)
    for epoch in range(state.get("epoch", 0), tcfg["epochs"]):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg["run"]["seed"], epoch])
        tuples, stats = build_tuples(net, train_set, tcfg, rng, device, workers)
        loader = DataLoader(TupleDataset(tuples, augment, tcfg["image_size"]), batch_size=tcfg["batch_tuples"],
                            shuffle=True, num_workers=workers, drop_last=False,
                            generator=torch.Generator().manual_seed(cfg["run"]["seed"] * 1000 + epoch))
        loss = train_one_epoch(net, loader, optimizer, tcfg, device, epoch)
        scheduler.step()
        row = {"epoch": epoch + 1, "loss": round(loss, 5), "tuples": len(tuples),
               **{k: round(v, 4) for k, v in stats.items()}, "epoch_s": round(time.perf_counter() - started, 1)}
        _append_metrics(out / "metrics.csv", row)
        log.info("epoch %d/%d %s", epoch + 1, tcfg["epochs"], " ".join(f"{k}={v}" for k, v in row.items()))
        save_checkpoint(checkpoint_path, net, config=cfg, epoch=epoch + 1, optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), torch_rng=torch.get_rng_state(), summary=summary)
        training_curves(out / "metrics.csv", out / "plots" / "curves.png")
    summary["map_after"] = evaluate_net(net, comp, data_root, cfg["infer"], device, workers).get("all")
    save_checkpoint(checkpoint_path, net, config=cfg, epoch=tcfg["epochs"], optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), torch_rng=torch.get_rng_state(), summary=summary)
    return {"checkpoint": checkpoint_path, "finished": False, **summary}


def _fmt(value: float | None) -> str:
    return "n/a (no ground truth)" if value is None else f"{value:.4f}"
