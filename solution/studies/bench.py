"""Benchmarks: ratios measured in one run, on this machine, written to ``runs/bench/<section>.json``.

``model``: forward time of backbone + head divided by the bare backbone's
(same tapped layers, same input), for REMAP, R-MAC and GeM. Timings alternate
between variants and take the median, so drift in machine load hits all alike.

``decode``: images/s per CPU core of the extraction data path on generated 0.5-megapixel JPEGs: on Kaggle's
4 vCPUs this, not the GPU, can bound extraction, and the kernel's time plan measures the same path.

``train``: images/s of the real training loop (JPEG decoding, augmentation,
DataLoader workers, aspect buckets, the optimisation step) divided by bare
forward+backward+step on the same batches already in memory; and the share of
an epoch that hard-negative mining takes at the configured sizes.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..model.net import build_net
from ..runtime import data_workers

HEAD_LAYERS = {"remap": [-2, -1], "rmac": [-2, -1], "gem": [-1]}


def _time(fn, x: torch.Tensor) -> float:
    started = time.perf_counter()
    fn(x)
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


class SectionMemory:
    """The peak resident memory of one section (sampled every 20 ms: the process-wide ``ru_maxrss`` would
    carry an earlier section's peak) and, on a GPU, its peak allocated CUDA memory."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s, self.peak_mb, self.cuda_peak_mb = interval_s, 0.0, None

    def __enter__(self) -> SectionMemory:
        import threading

        self.peak_mb = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20


@torch.no_grad()
def bench_model(backbones: list[str], height: int = 384, width: int = 512, batch: int = 4,
                repeats: int = 15) -> list[dict]:
    """Each repeat times every variant once, in turn, and forms its ratio to the bare backbone of the same
    repeat; the median of those paired ratios is reported with its spread (10th-90th percentile)."""
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
            ratios = sorted(h / b for h, b in zip(times[head], times["backbone"]))
            low, high = ratios[int(0.1 * (len(ratios) - 1))], ratios[int(round(0.9 * (len(ratios) - 1)))]
            median = statistics.median(times[head])
            rows.append({"backbone": backbone, "head": head, "input": f"{batch}x3x{height}x{width}",
                         "backbone_s": round(bare, 4), "with_head_s": round(median, 4),
                         "ratio": round(statistics.median(ratios), 3), "ratio_p10_p90": f"{low:.3f}-{high:.3f}",
                         "repeats": repeats, "img_per_s": round(batch / median, 2)})
    return rows


def _photo_like(rng, width: int, height: int):
    """An RGB image that compresses like a photograph: smooth shapes, edges and sensor-like noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))]
        draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(2))
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def bench_decode(images: int = 200, longest: int = 512, folder: str | Path = "runs/bench/decode") -> list[dict]:
    """Images per second per CPU core of the real extraction data path (open, EXIF, decode, RGB, resize to the
    bucket, tensor) on JPEGs of GLDv2's size (about 0.5 megapixel, about 120 KB), in one process; and with a
    DataLoader over every core."""
    import numpy as np
    from torch.utils.data import DataLoader

    from ..data.datasets import EvalDataset, bucket_batches, collate_eval

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        path = folder / f"{i:05d}.jpg"
        if not path.is_file():
            width, height = (816, 612) if i % 3 else (612, 816)  # 0.5 megapixel, landscape and portrait
            _photo_like(rng, width, height).save(path, "JPEG", quality=83)  # about 120 KB, as GLDv2
        paths.append(path)
    sizes_kb = [p.stat().st_size / 1024 for p in paths]
    started = time.perf_counter()
    dataset = EvalDataset(paths, longest)
    header_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    one_core = len(dataset) / (time.perf_counter() - started)
    cores = os.cpu_count() or 1
    loader = DataLoader(dataset, batch_sampler=bucket_batches(dataset.sizes, 32), num_workers=cores,
                        collate_fn=collate_eval)
    started = time.perf_counter()
    for _ in loader:
        pass
    all_cores = len(dataset) / (time.perf_counter() - started)
    return [{"images": images, "megapixels": round(816 * 612 / 1e6, 2), "mean_kb": round(float(np.mean(sizes_kb)), 1),
             "longest": longest, "header_ms_per_img": round(1000 * header_s / images, 3),
             "img_s_one_core": round(one_core, 1), "workers": cores, "img_s_all_workers": round(all_cores, 1),
             "img_s_per_core": round(all_cores / cores, 1), "peak_rss_mb": round(peak_rss_mb(), 0)}]


def _folder_of_photos(folder: Path, files: int, labels: int) -> None:
    """``folder/<label>/<i>.jpg``: ``files`` distinct small JPEGs (a base picture with the file's number drawn
    into a corner, so every file hashes differently), written once and kept while the count is the same."""
    from PIL import Image

    marker = folder / "files.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"files": files, "labels": labels}:
        return
    rng = np.random.default_rng(0)
    bases = [np.asarray(_photo_like(rng, 128, 96)) for _ in range(16)]
    for i in range(files):
        label = folder / f"label-{i % labels:05d}"
        label.mkdir(parents=True, exist_ok=True)
        pixels = bases[i % len(bases)].copy()
        bits = np.unpackbits(np.array([i], ">u4").view(np.uint8))  # the file's number, 32 black or white cells
        pixels[:8, :64] = np.repeat(np.repeat(bits * 255, 2)[None, :, None], 8, axis=0)
        Image.fromarray(pixels).save(label / f"{i:06d}.jpg", "JPEG", quality=90)
    marker.write_text(json.dumps({"files": files, "labels": labels}))


def bench_folder(files: int = 100_000, labels: int = 10_000, folder: str | Path = "runs/bench/folder",
                 keep: bool = False) -> list[dict]:
    """The folder source at scale: seconds and resident memory to list ``files`` generated JPEGs in ``labels``
    label folders, hash and check each (in every core), split them and write the links and CSVs; then the
    re-run's check. The generated folder is removed afterwards unless ``keep``."""
    import shutil

    from ..data import folder as source

    folder = Path(folder)
    images, out = folder / "images", folder / "competition"
    _folder_of_photos(images, files, labels)
    shutil.rmtree(out, ignore_errors=True)
    spec = source.folder_spec({"images": str(images.resolve())}, folder)
    workers = data_workers(None)
    rss0, row = current_rss_mb(), {"files": files, "labels": labels, "workers": workers}
    started = time.perf_counter()
    pairs, seen = source.all_sources(spec)
    row["list_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    entries = source.usable(pairs, workers)
    row["hash_s"] = round(time.perf_counter() - started, 2)
    row["files_s_hashed"] = round(files / row["hash_s"], 0)
    started = time.perf_counter()
    source.assign(entries, seen, spec)
    row["split_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    counts = source.write_competition(out, entries, spec)
    row["write_s"] = round(time.perf_counter() - started, 2)
    row["rss_growth_mb"] = round(current_rss_mb() - rss0, 1)
    row["mean_kb"] = round(sum(p.stat().st_size for p, _ in pairs[:1000]) / min(1000, len(pairs)) / 1024, 1)
    started = time.perf_counter()
    pairs, _ = source.all_sources(spec)  # what a re-run of `make data` redoes: the listing, not the hashing
    row["rerun_list_s"] = round(time.perf_counter() - started, 2)
    row.update({f"{k}_images": v for k, v in counts.items()})
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return [row]


def write_results(section: str, rows: list[dict], out_dir: str | Path = "runs/bench",
                  memory: SectionMemory | None = None, device: str = "cpu") -> Path:
    out = Path(out_dir) / f"{section}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"section": section, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "device": device, "section_peak_rss_mb": round(memory.peak_mb, 1) if memory else None,
               "section_peak_cuda_mb": round(memory.cuda_peak_mb, 1) if memory and memory.cuda_peak_mb else None,
               "rows": rows}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    return out


def faiss_gpus() -> int:
    from ..infer.search import gpu_count

    return gpu_count()


def format_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ; blanks where absent
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def bench_train(cfg: dict, steps: int = 12) -> list[dict]:
    """Measured on the configured competition (``make data`` first) with the configured model."""
    import numpy as np
    from torch.utils.data import DataLoader

    from ..data.datasets import TupleDataset, collate_tuples
    from ..train.loop import Trainer, make_optimizer
    from ..train.tuples import draw_epoch, epoch_batches, epoch_image_size, image_shapes, load_train_set

    trainer = Trainer(cfg)
    tcfg = cfg["train"]
    train_set = load_train_set(trainer.comp, cfg["data"]["root"], cfg["data"]["train_list"])
    shapes = image_shapes(train_set.paths, tcfg["image_size"], tcfg["aspect_buckets"])
    net = build_net(cfg["model"]).to(trainer.device)
    # ArcFace's class centres as training builds them, random rather than imprinted: the step costs the same
    trainer.tcfg = {**tcfg, "arcface": {**tcfg["arcface"], "init": "random"}}
    trainer.classifier = trainer.build_classifier(net, train_set, {})
    optimizer = make_optimizer(net, tcfg, trainer.classifier)
    scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp == torch.float16)
    sized = {**tcfg, "tuples_per_epoch": steps * tcfg["tuples_per_step"], "negatives": "random"}
    plan = draw_epoch(train_set, shapes, sized, cfg["run"]["seed"], 0, None)
    dataset = TupleDataset([[train_set.paths[i] for i in t] for t in plan.tuples], plan.shapes, tcfg)
    batches = epoch_batches(plan, tcfg["tuples_per_step"], 1, cfg["run"]["seed"], 0)
    net.train()

    def labels(b: list[int]) -> list[torch.Tensor] | None:
        if trainer.classifier is None:
            return None
        return [torch.from_numpy(trainer.class_of[np.asarray([plan.tuples[t] for t in b])])]

    started = time.perf_counter()
    images = 0
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=trainer.workers, collate_fn=collate_tuples)
    for b, (batch, _) in zip(batches, loader):
        trainer.train_step(net, optimizer, scaler, [batch], len(batch), 0, labels(b))
        images += batch.shape[0] * batch.shape[1]
    real = images / (time.perf_counter() - started)

    in_memory = [collate_tuples([dataset[i] for i in b])[0] for b in batches]
    started = time.perf_counter()
    for b, batch in zip(batches, in_memory):
        trainer.train_step(net, optimizer, scaler, [batch], len(batch), 0, labels(b))
    bare = images / (time.perf_counter() - started)

    mining = {**tcfg, "negatives": "hard", "loss": "triplet"}  # what a triplet term adds (ArcFace alone mines nothing)
    plan = draw_epoch(train_set, shapes, mining, cfg["run"]["seed"], 1,
                      lambda idx: trainer.describe(net, [train_set.paths[i] for i in idx], "mine",
                                                   epoch_image_size(tcfg, 1)))
    epoch_images = len(plan.tuples) * (2 + tcfg["neg_num"])
    train_s = epoch_images / real
    mine_s = plan.stats["mine_s"]
    return [{"device": str(trainer.device), "model": f"{cfg['model']['backbone']}+{cfg['model']['head']}",
             "size": tcfg["image_size"],
             "images": images, "loop_img_s": round(real, 2), "bare_img_s": round(bare, 2),
             "loop_vs_bare": round(real / bare, 3), "epoch_tuples": len(plan.tuples), "mine_s": round(mine_s, 2),
             "train_s": round(train_s, 1), "mining_share": round(mine_s / (mine_s + train_s), 3),
             "peak_rss_mb": round(peak_rss_mb(), 0), "unique_batches": int(np.unique([len(b) for b in batches]).size)}]


def bench_search(n_index: int = 50_000, n_queries: int = 5_000, dim: int = 512, k: int = 100,
                 gemm_dim: int = 2048, gemm_size: int = 4096) -> list[dict]:
    """Search + alpha-QE + DBA, divided by the bare k-NN passes it needs (db x db top-(k_dba+1), then two
    query passes), on a synthetic clustered L2-normalised index; then the bare search's share of this
    machine's GEMM peak at the kernel's ``gemm_dim``."""
    import numpy as np

    from ..infer.retrieve import retrieve
    from ..infer.search import knn

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_index // 10, dim)).astype(np.float32)
    index = centres[rng.integers(0, len(centres), n_index)] + 0.5 * rng.standard_normal((n_index, dim), np.float32)
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    queries = index[rng.integers(0, n_index, n_queries)] + 0.3 * rng.standard_normal((n_queries, dim), np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cfg = {"topk": k, "index": {"type": "flat", "dtype": "float32"}, "qe": {"enabled": True, "alpha": 3.0, "n": 5},
           "dba": {"enabled": True, "k": 10, "scheme": "alpha", "alpha": 3.0},
           "diffusion": {"enabled": False}, "superglobal": {"enabled": False, "m": 400},
           "label_rerank": {"enabled": False}}
    started = time.perf_counter()
    knn(index, index, cfg["dba"]["k"] + 1)
    knn(queries, index, k)
    knn(queries, index, k)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    retrieve(queries, index, cfg)
    full = time.perf_counter() - started
    index_mb = index.nbytes / 2**20
    return [{"index": f"{n_index}x{dim}", "queries": n_queries, "k": k, "bare_faiss_s": round(bare, 2),
             "search_qe_dba_s": round(full, 2), "ratio": round(full / bare, 3), "index_mb": round(index_mb, 1),
             "peak_rss_mb": round(peak_rss_mb(), 0)},
            search_against_gemm_peak(n_index, n_queries, gemm_dim, k, gemm_size=gemm_size)]


def gemm_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """This machine's float32 GEMM rate through torch (the BLAS the search calls): the best of ``repeats``
    square n x n products after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def search_against_gemm_peak(n_index: int, n_queries: int, dim: int, k: int = 100, repeats: int = 5,
                             gemm_size: int = 4096) -> dict:
    """The blocked exact search's GFLOPS (one top-k pass of ``n_queries`` over ``n_index``, 2 Q N D flops)
    against :func:`gemm_peak_gflops`, in ``repeats`` pairs: each search is timed between two peak measurements,
    and its share is taken against the better of those two. The median share is reported, with the range.

    Why pairs: on a shared machine the square-product peak itself moves by 20-35% within a minute, and a
    peak caught in a quiet second beside a search timed in a busy one measures the neighbours, not the
    search."""
    import numpy as np

    from ..infer.search import knn

    rng = np.random.default_rng(1)
    index = _synthetic_unit_rows(np.empty((n_index, dim), np.float32), rng)
    queries = _synthetic_unit_rows(np.empty((n_queries, dim), np.float32), rng)
    knn(queries[:256], index, k)  # warm-up: BLAS threads, allocator
    flops = 2 * n_queries * n_index * dim
    peaks, searches = [], []
    before = gemm_peak_gflops(gemm_size, repeats=2)
    for _ in range(repeats):
        searches.append(flops / _seconds(lambda: knn(queries, index, k)) / 1e9)
        after = gemm_peak_gflops(gemm_size, repeats=2)
        peaks.append(max(before, after))
        before = after
    shares = sorted(s / p for s, p in zip(searches, peaks))
    return {"index": f"{n_index}x{dim}", "queries": n_queries, "k": k,
            "sgemm_peak_gflops": round(statistics.median(peaks), 1),
            "search_gflops": round(statistics.median(searches), 1),
            "share_of_peak": round(statistics.median(shares), 3), "share_range": f"{shares[0]:.3f}-{shares[-1]:.3f}",
            "pairs_search_over_peak": " ".join(f"{s:.1f}/{p:.1f}" for s, p in zip(searches, peaks))}


def bench_extract(cfg: dict, images: int = 160) -> list[dict]:
    """The real extraction pipeline (JPEG decode, resize, TTA scales, pooling, shard writing) divided by the
    bare forward of the same TTA on the same images, decoded and resized in memory beforehand."""
    import tempfile

    from ..competition import load_competition
    from ..data.datasets import EvalDataset, bucket_batches, collate_eval
    from ..data.gldv2 import image_path
    from ..infer.features import extract_split, split_ids, tta_module

    comp = load_competition(cfg["competition"])
    infer_cfg = {**cfg["infer"], "shard_size": max(16, images // 4)}
    data_root = cfg["data"]["root"]
    net = build_net(cfg["model"]).eval()
    ids = split_ids(comp, data_root, "index")[:images]
    paths = [image_path(comp.data_dir(data_root), "index", i) for i in ids]
    dataset = EvalDataset(paths, infer_cfg["image_size"])
    batches = [collate_eval([dataset[i] for i in b])[0]
               for b in bucket_batches(dataset.sizes, infer_cfg["batch_size"])]
    model = tta_module(net, infer_cfg)

    def bare_pass() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            for batch in batches:
                model(batch)
        return len(ids) / (time.perf_counter() - started)

    bare_pass()  # untimed: each shape's first forward (oneDNN's kernels, malloc's heap) is paid by neither side
    # extract_split reads the whole split from its CSV, so time it on a CSV view limited to ``images`` rows.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inputs"
        (root / comp.data["dir"]).mkdir(parents=True)
        (root / comp.data["dir"] / "index").symlink_to((comp.data_dir(data_root) / "index").resolve())
        (root / comp.data["dir"] / comp.data["index_csv"]).write_text("id\n" + "\n".join(ids) + "\n")
        started = time.perf_counter()
        extract_split(net, comp, root, "index", Path(tmp) / "features", infer_cfg, torch.device("cpu"),
                      data_workers(cfg["run"]["workers"]))
        real = len(ids) / (time.perf_counter() - started)
    bare = bare_pass()
    return [{"model": f"{cfg['model']['backbone']}+{cfg['model']['head']}", "size": infer_cfg["image_size"],
             "scales": len(infer_cfg["scales"]), "flip": infer_cfg["flip"], "images": len(ids),
             "pipeline_img_s": round(real, 2), "bare_forward_img_s": round(bare, 2),
             "ratio": round(real / bare, 3), "peak_rss_mb": round(peak_rss_mb(), 0)}]


def _synthetic_unit_rows(out: np.ndarray, rng, chunk: int = 16_384) -> np.ndarray:
    """Fill ``out`` (any float dtype) with L2-normalised Gaussian rows, a float32 chunk at a time."""
    for start in range(0, len(out), chunk):
        block = rng.standard_normal((min(chunk, len(out) - start), out.shape[1]), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def clustered_unit_rows(n: int, dim: int, per_cluster: int, spread: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` L2-normalised rows in clusters of ``per_cluster`` around random centres, and each row's cluster:
    ``spread`` is the noise's norm against the centre's (1.0 puts a cluster's pairs near cosine 0.5, where
    many scores crowd around a query's 100th neighbour)."""
    clusters = np.arange(n) // per_cluster
    centres = rng.standard_normal((clusters[-1] + 1, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = centres[clusters] + spread * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), clusters


def half_product_agreement(n_index: int = 60_000, n_queries: int = 500, dim: int = 2048, k: int = 100,
                           per_cluster: int = 150, spread: float = 4.0, seed: int = 0) -> dict:
    """How far the float16 search path (:func:`solution.infer.search._blocked_top_k` with ``half=True``: a
    float16 product, emulated here with its output rounded to float16, the harsher case, then the float32
    rescoring of its shortlist) ranks from the float32 one, on clustered data at the real dimension.
    Reported: the mean and worst top-k overlap with and without the rescoring, the largest difference
    between the two paths' i-th scores (a swap between equal scores changes the overlap, not the ranking's
    quality), and mAP@k with each query's cluster as its relevant set for both rankings."""
    from ..infer.search import ExactIndex, search, shortlist_size

    rng = np.random.default_rng(seed)
    rows, clusters = clustered_unit_rows(n_index + n_queries, dim, per_cluster, spread, rng)
    order = rng.permutation(len(rows))
    rows, clusters = rows[order], clusters[order]
    index, queries = rows[:n_index].astype(np.float16), rows[n_index:]
    exact_scores, exact = search(ExactIndex(index, device="cpu", half=False), queries, k)
    half_scores, half = search(ExactIndex(index, device="cpu", half=True), queries, k)
    import torch

    raw = (torch.from_numpy(queries).half().float() @ torch.from_numpy(index).float().T).half()
    unrescored = raw.float().topk(k, dim=1).indices.numpy()

    def overlaps(ids: np.ndarray) -> np.ndarray:
        return np.array([len(set(a.tolist()) & set(e.tolist())) / k for a, e in zip(ids, exact)])

    def mean_ap(ids: np.ndarray) -> float:
        hits = clusters[:n_index][ids] == clusters[n_index:, None]
        relevant = np.minimum((clusters[:n_index][None] == clusters[n_index:, None]).sum(1), k)
        precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
        return float(((precision * hits).sum(1) / np.maximum(relevant, 1)).mean())

    with_rescoring, without = overlaps(half), overlaps(unrescored)
    return {"stage": f"float16 product, shortlist {shortlist_size(k)} rescored in float32, vs float32",
            "index": f"{n_index}x{dim} float16, clusters of {per_cluster}", "queries": n_queries,
            "overlap_mean": round(float(with_rescoring.mean()), 4),
            "overlap_worst": round(float(with_rescoring.min()), 4),
            "unrescored_overlap_mean": round(float(without.mean()), 4),
            "unrescored_overlap_worst": round(float(without.min()), 4),
            "largest_score_difference": float(f"{np.abs(half_scores - exact_scores).max():.2g}"),
            "map_float32": round(mean_ap(exact), 4), "map_float16": round(mean_ap(half), 4)}


# The 2021 Kaggle retrieval set: 761,757 index images, 117,577 test queries.
GLR2021 = {"index": 761_757, "queries": 117_577}
T4_FP16_TFLOPS = 20.0  # assumed sustained float16 GEMM on a T4 (65 TFLOPS tensor-core peak); not measured here


def bench_scale(n_index: int = 1_000_000, n_queries: int = 2_000, dim: int = 4096, dtype: str = "float16",
                k: int = 100, dba_slice: int = 100_000, dba_k: int = 10, qe_n: int = 5,
                sq_rows: int = 20_000) -> list[dict]:
    """The real ``retrieve()`` (exact search + alpha-QE) over a synthetic ``n_index`` x ``dim`` index stored as
    ``dtype`` and handed over in place, as the submission path does; then in-place DBA timed on the first
    ``dba_slice`` rows and projected; then faiss's own CPU float16 index timed against ours on ``sq_rows``.

    Memory is the process's resident set, sampled during each stage, against the stored index and the
    process's baseline before the index existed. The projections (1M DBA, the 2021 set on one T4) are
    arithmetic from the measured throughput and are labelled as such.
    """
    from ..infer.rerank import database_augmentation
    from ..infer.retrieve import retrieve
    from ..infer.search import ExactIndex, _faiss, search

    faiss = _faiss()  # imported before the baseline is read: its libraries are part of the process
    baseline = current_rss_mb()
    rng = np.random.default_rng(0)
    index = _synthetic_unit_rows(np.empty((n_index, dim), dtype), rng)
    queries = _synthetic_unit_rows(np.empty((n_queries, dim), np.float32), rng)
    index_mb = index.nbytes / 2**20
    cfg = {"topk": k, "index": {"type": "flat", "dtype": dtype, "spill_dir": None},
           "qe": {"enabled": True, "alpha": 3.0, "n": qe_n}, "dba": {"enabled": False},
           "diffusion": {"enabled": False}, "superglobal": {"enabled": False, "m": 400},
           "label_rerank": {"enabled": False}}
    with SectionMemory() as memory:
        started = time.perf_counter()
        retrieve(queries, index, cfg, in_place=True)
        seconds = time.perf_counter() - started
    flops = 2 * 2 * n_queries * n_index * dim  # two passes (search, then the expanded queries), 2 flops per MAC
    gflops = flops / max(seconds, 1e-9) / 1e9
    rows = [{"stage": f"search + alpha-QE (n={qe_n})", "index": f"{n_index}x{dim} {dtype}", "queries": n_queries,
             "seconds": round(seconds, 1), "queries_per_s": round(n_queries / seconds, 1),
             "gflops": round(gflops, 1), "index_mb": round(index_mb), "baseline_mb": round(baseline),
             "peak_mb": round(memory.peak_mb), "peak_over_index": round((memory.peak_mb - baseline) / index_mb, 3),
             "within_1.5x": memory.peak_mb < 1.5 * index_mb + baseline}]
    part = index[:min(dba_slice, n_index)]
    with SectionMemory() as memory:
        started = time.perf_counter()
        database_augmentation(part, dba_k, in_place=True)
        dba_s = time.perf_counter() - started
    full_dba_s = dba_s * (n_index / len(part)) ** 2  # the k-NN of every row against every row: N^2 D
    dba_gflops = 2 * len(part) ** 2 * dim / max(dba_s, 1e-9) / 1e9  # unrounded: a tiny run rounds to 0
    rows.append({"stage": f"DBA (k={dba_k}) in place", "index": f"{len(part)}x{dim} {dtype}",
                 "seconds": round(dba_s, 1), "gflops": round(dba_gflops, 1),
                 "projected_full_s": round(full_dba_s), "projected_for": f"{n_index}x{dim}",
                 "peak_mb": round(memory.peak_mb)})
    sample = np.ascontiguousarray(index[:sq_rows], np.float16)
    few = queries[:200]
    sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sq.add(sample.astype(np.float32))
    started = time.perf_counter()
    sq.search(few, k)
    sq_s = time.perf_counter() - started
    started = time.perf_counter()
    search(ExactIndex(sample, use_gpu=False), few, k)
    ours_s = time.perf_counter() - started
    rows.append({"stage": "CPU float16: faiss IndexScalarQuantizer(QT_fp16) vs ExactIndex",
                 "index": f"{sq_rows}x{dim}", "queries": len(few), "faiss_sq_s": round(sq_s, 2),
                 "exact_index_s": round(ours_s, 2), "speedup": float(f"{sq_s / ours_s:.3g}")})
    # The 2021 set on one T4, float16 on the GPU: the same flop counts at an assumed sustained rate.
    q21, n21 = GLR2021["queries"], GLR2021["index"]
    search21, dba21 = 2 * 2 * q21 * n21 * dim, 2 * n21 * n21 * dim
    rows.append({"stage": f"projection: GLR2021 on one T4 (assumed {T4_FP16_TFLOPS:.0f} TFLOPS float16)",
                 "index": f"{n21}x{dim} float16", "queries": q21,
                 "index_gpu_gb": round(n21 * dim * 2 / 1e9, 2),
                 "search_qe_tflop": round(search21 / 1e12), "dba_tflop": round(dba21 / 1e12),
                 "t4_search_qe_s": round(search21 / (T4_FP16_TFLOPS * 1e12)),
                 "t4_dba_s": round(dba21 / (T4_FP16_TFLOPS * 1e12)),
                 "this_cpu_search_qe_h": round(search21 / (gflops * 1e9) / 3600, 1),
                 "this_cpu_dba_h": round(dba21 / (dba_gflops * 1e9) / 3600, 1)})
    return rows
