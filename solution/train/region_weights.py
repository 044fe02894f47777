"""How far training moved REMAP's region weights from their KL start: figures, a file and a picture.

A weight's change is measured against its layer's mean starting weight (1 after KL initialisation), so a
region that starts near 0 and grows counts as much as one that starts at 2 and moves as far."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..model.net import RetrievalNet, load_checkpoint
from ..viz import region_weights_before_after


def weights_moved(initial: np.ndarray, trained: np.ndarray, layers: list[int]) -> dict[str, dict[str, float]]:
    """{"stage <layer>": {"mean", "max"}} of |trained - initial| over the layer's mean initial weight."""
    out = {}
    for layer, start, end in zip(layers, np.asarray(initial, float), np.asarray(trained, float)):
        change = np.abs(end - start) / max(float(start.mean()), 1e-12)
        out[f"stage {layer}"] = {"mean": round(float(change.mean()), 4), "max": round(float(change.max()), 4)}
    return out


def record_weights_moved(net: RetrievalNet, initial_checkpoint: Path, out: Path) -> dict | None:
    """Compare ``net``'s region weights with the off-the-shelf checkpoint's; write ``region_weights.json`` and
    ``plots/region_weights.png`` into ``out``. None for heads without region weights or no start on disk."""
    if not hasattr(net.head, "region_weights") or not initial_checkpoint.is_file():
        return None
    start = load_checkpoint(initial_checkpoint)[0].head.region_weights.detach().cpu().numpy()
    trained = net.head.region_weights.detach().cpu().numpy()
    layers = list(net.meta["layers"])
    moved = weights_moved(start, trained, layers)
    with atomic_path(out / "region_weights.json") as tmp:
        tmp.write_text(json.dumps({"layers": layers, "moved": moved, "initial": start.round(5).tolist(),
                                   "trained": trained.round(5).tolist()}, indent=1))
    region_weights_before_after(start, trained, layers, out / "plots" / "region_weights.png")
    return moved


def moved_line(moved: dict[str, dict[str, float]]) -> str:
    """``stage -2 mean 3.1%, max 25.0%; ...``"""
    return "; ".join(f"{layer} mean {m['mean']:.1%}, max {m['max']:.1%}" for layer, m in moved.items())
