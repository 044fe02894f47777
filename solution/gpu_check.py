"""``make gpu-check``: a short GPU smoke test and throughput table (a few minutes on one H100).

It runs AMP training steps (triplet loss) and measures training and extraction
images/s at 512 px for ResNet-50 and lite0, then checks faiss on the GPU
against the CPU index. Without a CUDA device it says so in one line and exits 0.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .bench import format_table
from .model.net import build_net
from .train.loop import amp_dtype
from .train.loss import triplet_loss

MODELS = ("resnet50", "tf_efficientnet_lite0")


def _model_cfg(backbone: str) -> dict:
    return {"backbone": backbone, "pretrained": "package" if backbone == "tf_efficientnet_lite0" else "none",
            "pretrained_file": None, "layers": [-2, -1], "head": "remap", "gem_p": 3.0,
            "whiten_dim": 256,  # lite0's two tapped stages give 112 + 320 = 432 dimensions: 512 cannot fit
            "whiten_shrinkage": 0.1,
            "regions": {"levels": 4, "overlap": 0.4, "reference": [32, 24], "whole": True}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, images: int, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (cudnn autotune, allocator)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return images * repeats / (time.perf_counter() - started)


def check_model(backbone: str, size: int = 512, tuples: int = 8, neg: int = 5, extract_batch: int = 64,
                device: torch.device | None = None) -> dict:
    device = device or torch.device("cuda")
    dtype = amp_dtype(device, "auto")
    net = build_net(_model_cfg(backbone)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    batch = torch.rand(tuples * (2 + neg), 3, size, size, device=device)
    images = torch.rand(extract_batch, 3, size, size, device=device)
    losses = []

    def train_step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            d = net(batch).float().view(tuples, 2 + neg, -1)
        loss = triplet_loss(d[:, 0], d[:, 1], d[:, 2:])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss))

    @torch.no_grad()
    def extract():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            net(images)

    net.train()
    train_rate = _rate(train_step, len(batch), 5, device)
    net.eval()
    extract_rate = _rate(extract, extract_batch, 10, device)
    return {"model": f"{backbone}+remap", "size": size, "amp": str(dtype).removeprefix("torch.") if dtype else "off",
            "train_img_s": round(train_rate, 1), "extract_img_s": round(extract_rate, 1),
            "loss_finite": bool(np.isfinite(losses).all())}


def check_models() -> list[dict]:
    rows = []
    for backbone in MODELS:
        rows.append(check_model(backbone))
        torch.cuda.empty_cache()
    return rows


def check_faiss(n: int = 200_000, d: int = 512, queries: int = 10_000, k: int = 100) -> dict:
    import faiss

    gpus = faiss.get_num_gpus()
    if gpus == 0:
        return {"faiss_gpus": 0, "ok": False}
    rng = np.random.default_rng(0)
    db = rng.standard_normal((n, d), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:queries] + 0.01 * rng.standard_normal((queries, d), dtype=np.float32)
    index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d))
    index.add(db)
    started = time.perf_counter()
    _, gpu_ids = index.search(q, k)
    gpu_s = time.perf_counter() - started
    cpu = faiss.IndexFlatIP(d)
    cpu.add(db)
    _, cpu_ids = cpu.search(q[:500], k)
    agreement = float((gpu_ids[:500, :10] == cpu_ids[:, :10]).mean())
    return {"faiss_gpus": gpus, "index": f"{n}x{d}", "queries": queries, "gpu_search_s": round(gpu_s, 3),
            "top10_agreement_with_cpu": round(agreement, 4), "ok": agreement > 0.99}


def run() -> str:
    if not torch.cuda.is_available():
        return "gpu-check: no GPU found (torch.cuda.is_available() is False); nothing to check on this machine"
    name = torch.cuda.get_device_name(0)
    table = format_table(check_models())
    faiss_row = check_faiss()
    return f"device: {name}\n{table}\nfaiss: {faiss_row}"
