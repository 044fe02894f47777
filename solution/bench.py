"""Benchmarks: ratios measured in one run, on this machine, written to ``runs/bench/<section>.json``.

``model``: forward time of backbone + head divided by the bare backbone's
(same tapped layers, same input), for REMAP, R-MAC and GeM. Timings alternate
between variants and take the median, so drift in machine load hits all alike.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

from .model.net import build_net

HEAD_LAYERS = {"remap": [-2, -1], "rmac": [-2, -1], "gem": [-1]}


def _time(fn, x: torch.Tensor) -> float:
    started = time.perf_counter()
    fn(x)
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def bench_model(backbones: list[str], height: int = 384, width: int = 512, batch: int = 2,
                repeats: int = 5) -> list[dict]:
    rows = []
    for backbone in backbones:
        pretrained = "package" if backbone == "tf_efficientnet_lite0" else "none"
        nets = {head: build_net({"backbone": backbone, "pretrained": pretrained, "pretrained_file": None,
                                 "layers": layers, "head": head, "gem_p": 3.0, "whiten_dim": 0,
                                 "whiten_shrinkage": 0.0,
                                 "regions": {"levels": 4, "overlap": 0.4, "reference": [32, 24], "whole": True}}).eval()
                for head, layers in HEAD_LAYERS.items()}
        x = torch.rand(batch, 3, height, width)
        variants = {"backbone": nets["remap"].features, **nets}
        for fn in variants.values():  # warm-up: allocator, thread pool, first-call paths
            fn(x)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, fn in variants.items():
                times[name].append(_time(fn, x))
        bare = statistics.median(times["backbone"])
        for head in HEAD_LAYERS:
            median = statistics.median(times[head])
            rows.append({"backbone": backbone, "head": head, "input": f"{batch}x3x{height}x{width}",
                         "backbone_s": round(bare, 4), "with_head_s": round(median, 4),
                         "ratio": round(median / bare, 3), "img_per_s": round(batch / median, 2)})
    return rows


def write_results(section: str, rows: list[dict], out_dir: str | Path = "runs/bench") -> Path:
    out = Path(out_dir) / f"{section}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"section": section, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "device": "cuda" if torch.cuda.is_available() else "cpu", "peak_rss_mb": round(peak_rss_mb(), 1),
               "rows": rows}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out)
    return out


def format_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
