"""``make gpu-check``: the real GPU paths, each timed against the bare network on the same GPU in the same run.

- *train*: the training loop's own step (``Trainer.train_step``: AMP at the GPU's precision, the gradient
  scaler, unscale + clipping, accumulation) at 512 px with BatchNorm frozen, on a batch that fits a 16 GB
  T4; against a bare forward + backward of the same batch.
- *extract*: sharded extraction (``extract_split``, two shards, then the merge) with the default TTA
  (3 scales + flip) on 384 generated images, from JPEG to shard files, warmed up; against the bare forward
  of the same TTA on the same images already on the device (like for like: the ratio is the data path's cost).
- *search*: exact search (torch on the GPU) and IVF-PQ (faiss, on the GPU where its wheel has the card's
  code, else marked n/a) through ``build_index``/``search`` on clustered data, after a warm-up, checked
  against exact answers computed on the CPU.
- *ddp*: two ``torchrun``-style processes train the tiny toy for one epoch (NCCL) when two GPUs exist, both
  read at once and killed together on a timeout.
- *kernel*: the kernel's run (``solution.kernel.run``) on a small fake ``/kaggle/input``.

Each check runs isolated (:func:`isolated`): its own peak GPU memory, and an exception becomes a failed row
naming it, so the table always prints. Without a CUDA device it says so in one line and exits 0; the checks
themselves also run on CPU, which is how the tests exercise them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import load_config
from ..model.net import build_net, place, save_checkpoint
from ..train.loop import Trainer, freeze_batchnorm
from ..train.loss import MarginClassifier, triplet_loss
from ..train.tuples import uses_arcface
from .bench import format_table

MODELS = {"resnet50": 2, "tf_efficientnet_lite0": 4}  # tuples per step (7 images each) that fit 16 GB at 512 px


def _model_cfg(backbone: str) -> dict:
    cfg = load_config("toy", [f"model.backbone={backbone}", "model.whiten_dim=256"])["model"]
    if backbone != "tf_efficientnet_lite0":
        cfg["pretrained"] = "none"  # timm's hub is not reachable everywhere; speed does not depend on weights
    return cfg


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


def _peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def check_training(backbone: str, device: torch.device, size: int = 512, tuples: int | None = None,
                   neg: int = 5, repeats: int = 5) -> dict:
    """The real training step against a bare forward + backward of the same batch."""
    cfg = load_config("toy", [f"model.backbone={backbone}", "model.whiten_dim=256", f"train.neg_num={neg}",
                              f"run.device={device}"])
    cfg["model"] = _model_cfg(backbone)
    trainer = Trainer(cfg)  # run.device is ``device``: the trainer resolves it and its precision itself
    tuples = tuples or MODELS.get(backbone, 2)
    net = place(build_net(cfg["model"]), device)
    net.train()
    freeze_batchnorm(net.backbone)
    labels = None
    if uses_arcface(cfg["train"]):  # the default's loss: its class head and each image's class, as training has
        trainer.classifier = MarginClassifier.from_config(net.dim, np.full(100, 4), cfg["train"]["arcface"]).to(device)
        labels = [torch.randint(0, 100, (tuples, 2 + neg))]
    params = [*net.parameters(), *(trainer.classifier.parameters() if trainer.classifier is not None else [])]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=trainer.amp == torch.float16)
    batch = torch.randint(0, 256, (tuples, 2 + neg, 3, size, size), dtype=torch.uint8)
    losses = []
    _reset_peak(device)

    def step():
        losses.append(float(trainer.train_step(net, optimizer, scaler, [batch], len(batch), 0, labels)["loss"]))

    real = _rate(step, tuples * (2 + neg), repeats, device)
    peak = _peak_mb(device)
    on_device = batch.flatten(0, 1).to(device)

    def bare():
        with torch.autocast(device.type, dtype=trainer.amp, enabled=trainer.amp is not None):
            out = net(on_device).float().view(tuples, 2 + neg, -1)
        triplet_loss(out[:, 0], out[:, 1], out[:, 2:]).backward()

    bound = _rate(bare, tuples * (2 + neg), repeats, device)
    return {"check": "train step", "model": backbone, "size": size, "batch": tuples * (2 + neg),
            "amp": str(trainer.amp).removeprefix("torch.") if trainer.amp else "off", "img_s": round(real, 1),
            "bare_img_s": round(bound, 1), "ratio": round(real / bound, 3), "peak_mb": peak,
            "ok": bool(np.isfinite(losses).all())}


def check_extraction(backbone: str, device: torch.device, images: int = 384, size: int = 384,
                     workers: int | None = None) -> dict:
    """Sharded extraction with the default TTA, JPEG to merged features, against the bare forward of the same
    TTA (same scales and flip) on the same images already on the device; both warmed up first."""
    from ..competition import load_competition
    from ..data import toy
    from ..data.datasets import EvalDataset, bucket_batches, collate_eval
    from ..data.gldv2 import image_path
    from ..infer.features import extract_split, merge_split, split_ids, tta_module
    from ..runtime import data_workers

    cfg = load_config("toy", [f"infer.image_size={size}", f"infer.shard_size={max(8, images // 2)}"])
    infer_cfg = cfg["infer"]
    comp = load_competition("toy")
    net = place(build_net(_model_cfg(backbone)), device).eval()
    workers = data_workers(None) if workers is None else workers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inputs"
        toy.generate(root / "toy", size="tiny", seed=0, workers=1)
        ids = split_ids(comp, root, "index")
        paths = sorted((root / "toy" / "index").glob("*/*/*/*.jpg"))
        # enough images to time: the tiny set's index, repeated under new ids
        for n in range(max(0, images - len(ids))):
            new_id = f"{n:016x}"
            target = image_path(root / "toy", "index", new_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(paths[n % len(paths)].read_bytes())
            ids.append(new_id)
        (root / "toy" / "index.csv").write_text("id\n" + "\n".join(ids) + "\n")
        tta = tta_module(net, infer_cfg)
        with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
            warm = EvalDataset([image_path(root / "toy", "index", i) for i in ids[:infer_cfg["batch_size"]]], size)
            first = bucket_batches(warm.sizes, infer_cfg["batch_size"])[0]
            tta(collate_eval([warm[i] for i in first])[0].to(device))  # cudnn autotune, the allocator
        _sync(device)
        _reset_peak(device)
        started = time.perf_counter()
        for shard in range(2):
            folder = extract_split(net, comp, root, "index", Path(tmp) / "features", infer_cfg, device, workers,
                                   (shard, 2))
        descriptors, merged_ids, _ = merge_split(folder, ids)
        real = len(ids) / (time.perf_counter() - started)
        peak = _peak_mb(device)
        dataset = EvalDataset([image_path(root / "toy", "index", i) for i in ids], size)
        batches = [collate_eval([dataset[i] for i in b])[0].to(device)
                   for b in bucket_batches(dataset.sizes, infer_cfg["batch_size"])]
    @torch.no_grad()
    def bare():
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            for batch in batches:
                tta(batch)

    bound = _rate(bare, len(ids), 2, device)
    return {"check": "extract (2 shards, 3 scales + flip)", "model": backbone, "size": size, "batch": len(ids),
            "amp": "autocast" if device.type == "cuda" else "off", "img_s": round(real, 1),
            "bare_img_s": round(bound, 1), "ratio": round(real / bound, 3), "peak_mb": peak,
            "ok": merged_ids == ids and bool(np.isfinite(descriptors).all())}


def clustered(n: int, d: int, rng: np.random.Generator, per_cluster: int = 100, spread: float = 0.35) -> np.ndarray:
    """L2-normalised points around n / per_cluster random centres: data with neighbourhoods, as descriptors
    have. On Gaussian noise every point is about equally far from every other and IVF-PQ's recall@10 is near
    0.1 at these settings whatever the implementation, which says nothing about the GPU."""
    centres = rng.standard_normal((max(1, n // per_cluster), d), dtype=np.float32)
    x = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def check_search(n: int = 200_000, d: int = 512, queries: int = 10_000, k: int = 100,
                 nlist: int = 1024) -> list[dict]:
    """Exact search (torch on the GPU) and IVF-PQ (faiss, m=64, float16 lookup tables) through the project's
    own index code, warmed up, on clustered data. Exact: its top-10 against numpy's on the CPU. IVF-PQ: the
    share of queries whose exact nearest neighbour is in its top 10 (1-recall@10; about 0.97 with CPU faiss
    on this data at 20,000 x 512)."""
    from ..infer.search import ExactIndex, build_index, faiss_gpu_usable, search, search_devices, tensor_core_half

    rng = np.random.default_rng(0)
    db = clustered(n, d, rng)
    q = db[:queries] + 0.05 * rng.standard_normal((queries, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sample = q[:500]
    truth = np.argsort(-(sample @ db.T), axis=1)[:, :10]
    rows = []
    for kind in ("flat", "ivfpq"):
        if kind == "ivfpq" and torch.cuda.is_available() and not faiss_gpu_usable():
            capability = ".".join(map(str, torch.cuda.get_device_capability(0)))
            rows.append({"check": "search ivfpq (faiss GPU)", "ok": "n/a",
                         "note": f"faiss-gpu-cu12 has no code for compute capability {capability} (sm_70/sm_80 "
                                 "only): IVF-PQ runs on the CPU there"})
            continue
        index = build_index(db, kind=kind, nlist=nlist, m=64, nprobe=32)
        search(index, q[:100], k)  # warm-up
        started = time.perf_counter()
        _, ids = search(index, q, k)
        seconds = time.perf_counter() - started
        top = ids[:len(sample), :10]
        if kind == "flat":
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, truth)]))
            devices = ", ".join(search_devices())
            row = {"check": f"search exact float32 (torch on {devices})", "recall_at_10": round(recall, 4),
                   "ok": recall >= 0.99}
            rows.append({**row, "model": f"{n}x{d}", "batch": queries, "img_s": round(queries / seconds, 1)})
            # The float16 database the kernel holds: float16 products where the card has tensor cores, the
            # shortlist rescored in float32; its top-k must be the float32 path's.
            half = ExactIndex(db.astype(np.float16))
            search(half, q[:100], k)
            started = time.perf_counter()
            _, half_ids = search(half, q, k)
            seconds = time.perf_counter() - started
            overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(half_ids, ids)]))
            product = "float16 tensor cores" if all(half.half) else "widened to float32"
            row = {"check": f"search exact float16 index ({product}, {devices})",
                   "overlap_with_float32": round(overlap, 4), "ok": overlap >= 0.99,
                   "tensor_cores": all(tensor_core_half(dev) for dev in half.devices)}
        else:
            recall = float(np.mean([t in set(a) for a, t in zip(top, truth[:, 0])]))
            row = {"check": "search ivfpq (faiss GPU)" if torch.cuda.is_available() else "search ivfpq (faiss CPU)",
                   "one_recall_at_10": round(recall, 4), "ok": recall >= 0.9}
        rows.append({**row, "model": f"{n}x{d}", "batch": queries, "img_s": round(queries / seconds, 1)})
    return rows


def _communicate_all(processes: list[subprocess.Popen], seconds: float) -> list[str]:
    """Every process's stderr, read concurrently (one full pipe would otherwise block the other process); all
    are killed when any is still running after ``seconds``."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(processes)) as pool:
        futures = [pool.submit(p.communicate, timeout=seconds) for p in processes]
        outputs, late = [], False
        for future in futures:
            try:
                outputs.append(future.result()[1] or "")
            except subprocess.TimeoutExpired:
                late = True
                for other in processes:
                    other.kill()
                outputs.append("")
    if late:  # one late process fails the check for all: their partial output is not a result
        for process in processes:
            process.wait(timeout=30)  # reaped: nothing of the check outlives it
        return [f"timed out after {seconds:.0f}s; killed"] * len(processes)
    return outputs


def check_ddp(seconds: int = 600) -> dict:
    """Two processes, one GPU each, train the tiny toy for one epoch over NCCL: same final weights."""
    import re
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--config", "toy-tiny", f"data.root={tmp}/inputs", f"run.dir={tmp}/runs", "train.epochs=1",
                  "train.tuples_per_epoch=16", "train.val_landmarks=0"]
        subprocess.run([sys.executable, "-m", "solution", "data", *common], check=True, capture_output=True)
        started = time.perf_counter()
        processes = [subprocess.Popen([sys.executable, "-m", "solution", "train", *common],
                                      env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                           "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                                           "LOCAL_WORLD_SIZE": "2"},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
        outputs = _communicate_all(processes, seconds)
    sums = [re.search(r"final weights checksum (\S+)", err) for err in outputs]
    ok = all(p.returncode == 0 for p in processes) and all(sums) and len({m.group(1) for m in sums}) == 1
    return {"check": "ddp 2 processes (NCCL)", "model": "tiny toy", "seconds": round(time.perf_counter() - started),
            "ok": ok, "note": "" if ok else outputs[0][-300:].replace("\n", " ")}


def check_kernel(device: torch.device) -> dict:
    """The kernel's own run on a fake input root: the tiny toy, a fresh lite0 checkpoint, every stage."""
    from ..data import toy
    from ..kernel.contract import MODEL_MARKER
    from ..kernel.run import run
    from ..kernel.simulate import mount

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        toy.generate(tmp / "toy", size="tiny", seed=0, workers=1)
        cfg = load_config("toy-tiny")
        model = tmp / "kaggle" / "model"
        model.mkdir(parents=True)
        save_checkpoint(model / "checkpoint.pt", build_net(cfg["model"]), config=cfg)
        (model / MODEL_MARKER).write_text(json.dumps({"checkpoint_sha256": "gpu-check", "infer": cfg["infer"]}))
        root = mount(tmp / "kaggle", tmp / "toy", tmp / "input", "new", datasets=("model",))
        started = time.perf_counter()
        out = run(root, tmp / "working", limit_s=3600, full=True, probe=16, warmup=4)
        rows = len(out.read_text().splitlines()) - 1
    return {"check": "kernel run (fake input)", "model": "tiny toy", "seconds": round(time.perf_counter() - started),
            "ok": rows > 0, "peak_mb": _peak_mb(device)}


def isolated(name: str, check, *args, device: torch.device | None = None) -> list[dict]:
    """One check's rows, whatever happens: an exception becomes a failed row naming it, and the GPU's peak
    memory is reset before the check, so each row's peak is its own."""
    if device is not None:
        _reset_peak(device)
    try:
        result = check(*args)
    except Exception as exc:  # a broken check must not lose the others' rows
        result = {"check": name, "ok": False, "note": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]}
    finally:
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
    return result if isinstance(result, list) else [result]


def device_line() -> str:
    name, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
    capability = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return f"device: {count} x {name} (compute capability {capability})"


def check_rows() -> list[dict]:
    """Every check's rows on ``cuda:0`` (the table's body; ``ok`` is True, False or n/a)."""
    device = torch.device("cuda", 0)
    rows = []
    for backbone in MODELS:
        rows += isolated(f"train step {backbone}", check_training, backbone, device, device=device)
        rows += isolated(f"extract {backbone}", check_extraction, backbone, device, device=device)
    rows += isolated("search", check_search, device=device)
    if torch.cuda.device_count() >= 2:
        rows += isolated("ddp", check_ddp)
    else:
        rows.append({"check": "ddp", "ok": "n/a", "note": "one GPU"})
    rows += isolated("kernel run", check_kernel, device, device=device)
    return rows


def run() -> str:
    if not torch.cuda.is_available():
        return "gpu-check: no GPU found (torch.cuda.is_available() is False); nothing to check on this machine"
    return f"{device_line()}\n{format_table(check_rows())}"
