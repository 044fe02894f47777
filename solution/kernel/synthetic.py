"""``kernel-dryrun --synthetic 2021``: the kernel's run path after extraction, at the 2021 competition's size.

Extraction is replaced by synthetic descriptors written where the kernel's own extraction writes them (one
preallocated pool array of the index's dtype: index rows, then test rows) at the real counts, and the train
descriptors are a real train-features dataset on disk that the kernel's own loader memory-maps. Everything
after that is the kernel's code: :func:`solution.kernel.run.search_and_write` (search, alpha-QE, DBA in place,
label votes and re-ranking, rankings, submission writing and validation).

The all-pairs matrix products cost hours on two CPU cores (DBA alone compares 761,757^2 pairs), so each call
of :func:`solution.infer.search.search` searches only its first ``slice_rows`` queries for real, against the
full database, and its result rows are tiled to the full count: every output array has its real size and
every full-size input is alive and read in full, so the memory peak is the real one; the time of each call
is projected by its rows. The report gives the peak resident memory, the time here, the projection here and
the projection on a T4 from the products' FLOPs at an assumed rate (printed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import time
from pathlib import Path

import numpy as np

from ..infer import retrieve as retrieve_module
from ..infer import search as search_module
from .build import write_train_features
from .contract import MODEL_MARKER
from .rehearse import fill_unit_rows

log = logging.getLogger("solution.kernel")

SIZES = {"2021": {"test": 117_577, "index": 761_757, "train": 1_580_470, "dim": 2048}}
T4_FP32_TFLOPS = 6.0  # assumed: 75% of the T4's 8.1 TFLOPS float32 peak (exact search widens to float32)


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc (peak: VmHWM)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = float(value.split()[0]) / 1024
    peak = fields.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return fields.get("VmRSS", peak), peak


def reset_peak() -> bool:
    """Restart the kernel's count of this process's peak resident memory (``/proc/self/clear_refs``, 5), so
    the peak reported is that of the kernel's path, not of writing the synthetic data; False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def fake_ids(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{value:016x}" for value in rng.integers(0, 2**63, count, dtype=np.int64)]


def write_train_dataset(root: Path, count: int, dim: int, landmarks: int, seed: int = 2) -> Path:
    """A train-features dataset (float16 descriptors, ids, landmark ids, marker) as `make kernel` writes it,
    written a chunk at a time through a memory map."""
    folder = root / "train-features"
    descriptors = np.lib.format.open_memmap(root / "tmp-train.npy", mode="w+", dtype=np.float16, shape=(count, dim))
    fill_unit_rows(descriptors, seed)
    descriptors.flush()
    labels = np.random.default_rng(seed).integers(0, landmarks, count)
    write_train_features(folder, descriptors, fake_ids(count, seed + 1), labels, "synthetic", "synthetic")
    del descriptors
    (root / "tmp-train.npy").unlink()
    return folder


class SlicedSearch:
    """Replaces ``search()`` so each call searches its first ``rows`` queries for real and tiles the answer;
    records every call with its projected time and FLOPs."""

    def __init__(self, rows: int):
        self.rows, self.calls, self.real = rows, [], search_module.search

    def __call__(self, index, queries: np.ndarray, k: int, chunk: int | None = None):
        done = min(len(queries), self.rows)
        started = time.perf_counter()
        scores, ids = self.real(index, queries[:done], k, chunk)
        seconds = time.perf_counter() - started
        self.calls.append({"queries": len(queries), "searched": done, "database": int(index.ntotal),
                           "dim": int(index.d), "seconds": seconds,
                           "projected_s": seconds * len(queries) / max(1, done),
                           "tflop": 2.0 * len(queries) * index.ntotal * index.d / 1e12})
        return np.resize(scores, (len(queries), scores.shape[1])), np.resize(ids, (len(queries), ids.shape[1]))

    @contextlib.contextmanager
    def installed(self):
        saved = search_module.search, retrieve_module.search
        search_module.search = retrieve_module.search = self
        try:
            yield self
        finally:
            search_module.search, retrieve_module.search = saved


def run_synthetic(name: str, infer_cfg: dict, work: Path, slice_rows: int = 2000, scale: float = 1.0,
                  landmarks: int = 81_313) -> dict:
    """The report of one synthetic-scale run (also written to ``work/report.json``)."""
    from .run import load_train_features, search_and_write

    sizes = {k: (v if k == "dim" else max(4, int(v * scale))) for k, v in SIZES[name].items()}
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    infer_cfg = {**infer_cfg, "label_rerank": {**infer_cfg["label_rerank"], "enabled": True},
                 "index": {**infer_cfg["index"], "spill_dir": str(work)}}
    started = time.perf_counter()
    baseline = rss_mb()[0]
    input_root, model_dir = work / "input", work / "input" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_MARKER).write_text(json.dumps({"checkpoint_sha256": "synthetic"}))
    write_train_dataset(input_root, sizes["train"], sizes["dim"], landmarks)
    train = load_train_features(input_root, model_dir)
    # What Prober.describe_all returns: one pool array of the index's dtype, index rows first.
    pool = np.empty((sizes["index"] + sizes["test"], sizes["dim"]), infer_cfg["index"].get("dtype", "float32"))
    fill_unit_rows(pool, seed=1)
    index, test = pool[:sizes["index"]], pool[sizes["index"]:]
    prepared = time.perf_counter() - started
    peak_reset = reset_peak()
    log.info("synthetic %s: %d index, %d test, %d train descriptors of %d-D ready in %.0fs (train %s, %s)", name,
             sizes["index"], sizes["test"], sizes["train"], sizes["dim"], prepared, type(train[0]).__name__,
             train[0].dtype)
    sliced = SlicedSearch(slice_rows)
    t0 = time.perf_counter()
    with sliced.installed():
        out = search_and_write(test, index, fake_ids(sizes["test"], 3), fake_ids(sizes["index"], 4), infer_cfg,
                               train, work / "working")
    after = time.perf_counter() - t0
    searched = sum(c["seconds"] for c in sliced.calls)
    projected_here = after - searched + sum(c["projected_s"] for c in sliced.calls)
    tflop = sum(c["tflop"] for c in sliced.calls)
    report = {
        "sizes": sizes, "slice_rows": slice_rows, "train_memmap": isinstance(train[0], np.memmap),
        "train_dtype": str(train[0].dtype), "index_dtype": str(index.dtype),
        "baseline_rss_mb": round(baseline), "peak_rss_mb": round(rss_mb()[1]),
        "peak_covers": "the kernel's path" if peak_reset else "preparation and the kernel's path",
        "prepare_s": round(prepared, 1), "after_extraction_s": round(after, 1),
        "projected_after_extraction_here_s": round(projected_here), "search_tflop": round(tflop, 1),
        "t4_assumed_tflops": T4_FP32_TFLOPS,
        "projected_t4_search_s": round(tflop / T4_FP32_TFLOPS + (after - searched)),
        "calls": sliced.calls, "submission": str(out),
    }
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
