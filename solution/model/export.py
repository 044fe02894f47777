"""Export a trained net to TorchScript, so a Kaggle kernel can run it without this package.

Tracing records the region boxes as cells of the traced map size, so the
exported model is exact for inputs of the traced height and width: export one
file per size bucket you extract at (``--size`` may be given several times).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_path
from .net import RetrievalNet


def export_torchscript(net: RetrievalNet, path: str | Path, height: int, width: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    example = torch.rand(1, 3, height, width)
    with torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return path


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path), map_location="cpu")
