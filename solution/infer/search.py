"""Inner-product top-k: exact search as blocked matrix products in PyTorch (on any GPU torch can use, else
on the CPU), approximate search (IVF-PQ) with faiss (on GPUs its wheel has code for, else on the CPU);
queries in chunks.

Why exact search is not faiss's: the ``faiss-gpu-cu12`` wheel holds machine code for sm_70 and sm_80 only
(no PTX), so its GPU index fails on a P100 (6.0), H100/H200 (9.0) and Kaggle's newer cards (12.0), where
torch runs; and on the CPU faiss's float16 index is 7x slower than a BLAS product (``bench scale``).

The database is held once, by the caller, as float32 or float16 (``infer.index.dtype``). Exact search splits
it into one contiguous slice per GPU (every GPU torch sees; under torchrun only the rank's own), searches the
slices at once and merges their top-k lists. A slice is held on its GPU, as its own dtype, when it fits half
the free memory, else streamed a block at a time. A float16 database is multiplied in float16 on cards with
tensor cores (a T4: about 65 TFLOPS against 8 in float32), keeping a shortlist that is rescored in float32,
so the ranking is the float32 one (``make bench`` ``precision``); elsewhere a float16 block is widened to
float32 for the product, then dropped. Nothing here makes a second full copy on the host, so a 1M x 4096
float16 index (8 GB) searches in little more than 8 GB.
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np

from ..config import ConfigError
from ..torchrun import launch

log = logging.getLogger(__name__)
FAISS_GPU_MAX_K = 2048  # faiss/gpu/utils/DeviceDefs.cuh: GPU_MAX_SELECTION_K


@functools.cache
def _faiss():
    import faiss  # noqa: PLC0415 - slow to import, and only search needs it

    local_world = launch().local_world
    if local_world > 1 and os.environ.get("OMP_NUM_THREADS") == "1":
        # torchrun pins every process to one OpenMP thread; CPU search then crawls. Share the cores instead.
        faiss.omp_set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


# faiss reserves 1.5 GiB of temporary memory per GPU by default, for the whole process. Its only GPU use left
# is IVF-PQ search, which tiles its queries to the memory it is given: 512 MiB leaves the rest to PyTorch.
FAISS_GPU_TEMP_BYTES = 512 * 2**20


@functools.cache
def gpu_resources(gpu: int):
    """One StandardGpuResources per GPU per process, reused by every search, with a bounded scratch space."""
    resources = _faiss().StandardGpuResources()
    resources.setTempMemory(FAISS_GPU_TEMP_BYTES)
    return resources


def search_gpus() -> list[int]:
    """The GPUs a search may use: under torchrun only this process's own (LOCAL_RANK), else all of them."""
    count = gpu_count()
    if count == 0:
        return []
    if launch().active:
        return [launch().local_rank % count]
    return list(range(count))


class GpuShards:
    """A database split into contiguous slices, one per GPU, each slice a clone of ``template`` (a trained,
    empty faiss index) filled a chunk at a time; a search asks every slice at once and merges the top-k.

    faiss's own sharding (``IndexShards``, as ``index_cpu_to_gpu_multiple`` builds it) accepts a single
    ``add`` only, which would need the whole database widened to float32 on the host at once.
    ``float16``: a flat slice stores float16 vectors (half the GPU memory, float16 GEMM); IVF-PQ uses
    float16 lookup tables, which m=64 needs on GPUs with 48 KiB of shared memory per block (T4).
    """

    def __init__(self, template, gpus: list[int], float16: bool):
        faiss = _faiss()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = float16
        self.d, self.ntotal = template.d, 0
        self.parts = [faiss.index_cpu_to_gpu(gpu_resources(g), g, template, options) for g in gpus]
        self.offsets = [0] * len(self.parts)
        self.warned = False

    def fill(self, vectors: np.ndarray, chunk: int) -> None:
        """Slice ``vectors`` evenly over the GPUs (replacing what they held), widening ``chunk`` rows at a time."""
        bounds = np.linspace(0, len(vectors), len(self.parts) + 1).round().astype(int)
        for part, start, stop in zip(self.parts, bounds[:-1], bounds[1:]):
            part.reset()
            for row in range(start, stop, chunk):
                part.add(as_float32(vectors[row:min(row + chunk, stop)]))
        self.offsets, self.ntotal = bounds[:-1].tolist(), len(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``index.search`` over every slice: (scores, global ids), best first. faiss's GPU indexes
        return at most 2,048 neighbours (GPU_MAX_SELECTION_K); beyond that the columns are -1 / -inf, and the
        caller is told once (exact search, which has no such limit, runs through torch)."""
        if k > FAISS_GPU_MAX_K:
            if not self.warned:
                log.warning("faiss's GPU index returns at most %d neighbours; %d were asked: the rest are empty",
                            FAISS_GPU_MAX_K, k)
                self.warned = True
            scores, ids = self.search(queries, FAISS_GPU_MAX_K)
            pad = k - FAISS_GPU_MAX_K
            return (np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf),
                    np.pad(ids, ((0, 0), (0, pad)), constant_values=-1))
        if len(self.parts) == 1:
            return self.parts[0].search(queries, k)
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        with ThreadPoolExecutor(len(self.parts)) as pool:  # faiss drops the GIL while a GPU searches
            answers = list(pool.map(lambda part: part.search(queries, min(k, max(1, part.ntotal))), self.parts))
        heap = _faiss().ResultHeap(len(queries), k, keep_max=True)
        for (scores, ids), offset in zip(answers, self.offsets):
            heap.add_result(scores, np.where(ids >= 0, ids + offset, -1))
        heap.finalize()
        return heap.D, heap.I


def free_torch_gpu_cache() -> None:
    """Hand PyTorch's cached GPU blocks back to the driver, so a faiss GPU index built after extraction finds
    the memory the descriptor net left behind (PyTorch keeps it reserved until told otherwise)."""
    import sys

    torch = sys.modules.get("torch")  # only when this process imported it: a search alone never needs torch
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def rows_per_chunk(dim: int, budget_bytes: int = 256 * 2**20) -> int:
    """Rows of ``dim`` float32 values that fit ``budget_bytes``: the unit every chunked loop here widens."""
    return max(256, budget_bytes // (4 * max(1, dim)))


def as_float32(rows: np.ndarray) -> np.ndarray:
    """``rows`` as C-contiguous float32: a view when they already are, else a copy of just these rows."""
    return np.ascontiguousarray(rows, dtype=np.float32)


def search_devices(use_gpu: bool | None = None) -> list[str]:
    """Where exact search runs: every GPU torch sees (under torchrun only this process's own,
    ``cuda:<LOCAL_RANK>``), whatever its compute capability; else ``["cpu"]``."""
    import torch  # noqa: PLC0415

    if use_gpu is False or not torch.cuda.is_available():
        return ["cpu"]
    count = torch.cuda.device_count()
    if launch().active:
        return [f"cuda:{launch().local_rank % count}"]
    return [f"cuda:{gpu}" for gpu in range(count)]


def torch_search_device(use_gpu: bool | None = None) -> str:
    """The first of :func:`search_devices`: where a single-device product runs."""
    return search_devices(use_gpu)[0]


def tensor_core_half(device: str) -> bool:
    """Whether a float16 database is multiplied in float16 on ``device``: CUDA cards with tensor cores
    (compute capability 7.0 and newer: V100, T4, A100, L4, H100; about 8x a T4's float32 rate). A P100 (6.0)
    and the CPU widen to float32, which is as fast there and exact."""
    if not device.startswith("cuda"):
        return False
    import torch  # noqa: PLC0415

    return torch.cuda.get_device_capability(device)[0] >= 7


def faiss_gpu_usable() -> bool:
    """Whether faiss's GPU index may be used: its build sees GPUs and has machine code for every one of them
    (:func:`solution.gpu_archs.faiss_gpu_serves`); a GPU it has no code for fails inside faiss."""
    if gpu_count() == 0:
        return False
    import torch  # noqa: PLC0415

    from ..gpu_archs import faiss_gpu_serves  # noqa: PLC0415

    if not torch.cuda.is_available():
        return True  # faiss sees a GPU that torch does not: trust faiss's own answer
    capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    usable = all(faiss_gpu_serves(major + minor / 10) for major, minor in capabilities)
    if not usable:
        log.info("faiss's GPU build has no code for compute capability %s: IVF-PQ runs on the CPU",
                 ", ".join(f"{a}.{b}" for a, b in capabilities))
    return usable


def shortlist_size(k: int) -> int:
    """Candidates a float16 product keeps per query before float32 rescoring picks the top ``k``: a quarter
    more, at least 16 more. Measured by :func:`half_product_agreement` (``make bench``, scale section): on
    clustered 2,048-D data the float16 shortlist of 125 holds every float32 top-100 neighbour."""
    return k + max(16, k // 4)


class ExactIndex:
    """Exact inner-product search over ``vectors`` (N x D, float32 or float16), held without a copy on the host.

    The rows are split into contiguous slices, one per device (:func:`search_devices`: every GPU, or the
    CPU); each slice is searched on its own device by one matrix product per block and a running top-k
    (:func:`_blocked_top_k`), the slices at once, and their top-k lists merged. On a GPU a slice is uploaded
    once, as its own dtype, when it takes at most half that GPU's free memory (``hold=None``), else streamed a
    block at a time; ``hold=True`` forces the held path (the CPU runs it too, which is how it is tested here).
    A float16 database is multiplied in float16 where the card has tensor cores (:func:`tensor_core_half`),
    then its shortlist rescored in float32, so scores and order are the float32 ones. Call :meth:`rebuild`
    after changing ``vectors`` in place.
    """

    def __init__(self, vectors: np.ndarray, use_gpu: bool | None = None, block: int | None = None,
                 device: str | list[str] | None = None, hold: bool | None = None, half: bool | None = None):
        if vectors.ndim != 2 or vectors.dtype not in (np.float32, np.float16):
            raise ValueError(f"an exact index needs N x D float32 or float16 vectors, got {vectors.dtype} "
                             f"{vectors.shape}")
        self.vectors = vectors
        self.ntotal, self.d = vectors.shape
        self.block = block or rows_per_chunk(self.d)
        devices = [device] if isinstance(device, str) else (device or search_devices(use_gpu))
        self.devices = devices[:max(1, self.ntotal)]
        self.device = self.devices[0]
        self.bounds = np.linspace(0, self.ntotal, len(self.devices) + 1).round().astype(int).tolist()
        self.hold = hold
        self.half = [vectors.dtype == np.float16 and (tensor_core_half(d) if half is None else half)
                     for d in self.devices]
        self._held: list = [None] * len(self.devices)
        self.rebuild()

    @staticmethod
    def _fits_on_device(device: str, nbytes: int) -> bool:
        import torch  # noqa: PLC0415

        free, _ = torch.cuda.mem_get_info(device)
        reusable = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return nbytes <= 0.5 * (free + reusable)

    def rebuild(self) -> None:
        """(Re)load each held slice on its device from ``vectors``; a streamed or CPU slice reads them directly."""
        import torch  # noqa: PLC0415

        dtype = torch.float16 if self.vectors.dtype == np.float16 else torch.float32
        for i, (device, start, stop) in enumerate(zip(self.devices, self.bounds[:-1], self.bounds[1:])):
            self._held[i] = None
            part = self.vectors[start:stop]
            hold = self.hold if self.hold is not None else (
                device != "cpu" and self._fits_on_device(device, part.nbytes))
            if not hold:
                continue
            held = torch.empty(part.shape, dtype=dtype, device=device)
            for row in range(0, len(part), self.block):
                held[row:row + self.block] = torch.from_numpy(np.ascontiguousarray(part[row:row + self.block]))
            self._held[i] = held

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``index.search``: (scores, ids), Q x k float32 / int64, best first."""
        queries = as_float32(queries)

        def one(i: int) -> tuple[np.ndarray, np.ndarray]:
            start, stop = self.bounds[i], self.bounds[i + 1]
            scores, ids = _blocked_top_k(queries, self.vectors[start:stop], k, self.block, self.devices[i],
                                         self._held[i], half=self.half[i])
            return scores, ids + start

        if len(self.devices) == 1:
            return one(0)
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        with ThreadPoolExecutor(len(self.devices)) as pool:  # each GPU's kernels run while the others' launch
            parts = list(pool.map(one, range(len(self.devices))))
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :min(k, self.ntotal)]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _half_scores(q16, rows16):
    """Q x B float32 scores from float16 operands. On CUDA, cuBLAS accumulates in float32 and writes float32
    (``out_dtype``, torch 2.8+), else writes float16; elsewhere (tests, the agreement measure) the float16
    result is emulated, output rounding included, which is the harsher case."""
    import torch  # noqa: PLC0415

    if q16.is_cuda:
        try:
            return torch.mm(q16, rows16.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            return (q16 @ rows16.T).float()
    return (q16.float() @ rows16.float().T).half().float()


def _rescore(q, ids, rows_at) -> tuple:
    """Float32 scores of each query's candidates (Q x C ids into a slice), ``rows_at(ids)`` giving their rows,
    a few hundred queries at a time so the gathered rows stay small; re-sorted best first."""
    import torch  # noqa: PLC0415

    step = max(1, 2**28 // max(1, ids.shape[1] * q.shape[1] * 4))
    scores = torch.empty(ids.shape, dtype=torch.float32, device=q.device)
    for start in range(0, len(q), step):
        rows = rows_at(ids[start:start + step]).float()
        scores[start:start + step] = torch.bmm(rows, q[start:start + step, :, None]).squeeze(2)
    scores, order = scores.sort(dim=1, descending=True)
    return scores, ids.gather(1, order)


GEMM_ROWS = 1024  # database rows per block come in multiples of this: see _blocked_top_k


def block_rows(block: int, rows: int, queries: int, score_bytes: int) -> int:
    """Database rows per matrix product: at most ``block`` and ``rows``, few enough that the queries' score
    matrix stays within ``score_bytes``, then down to a multiple of :data:`GEMM_ROWS` (see
    :func:`_blocked_top_k`)."""
    block = max(1, min(block, rows, score_bytes // (4 * max(1, queries))))
    if GEMM_ROWS < block < rows:
        block -= block % GEMM_ROWS
    return block


def _candidates_above(products, threshold, start: int) -> tuple | None:
    """Each query's scores in ``products`` (Q x B) that beat ``threshold`` (its running k-th best, Q x 1), as
    a Q x w block padded with -inf (w: the most any query has) and their ids (``start`` + column); None when
    more than an eighth of the block passes, where a plain top-k is cheaper.

    Why: once a query holds k results, only scores above its k-th can enter, and after the first blocks
    those are a few per query, so one comparison and one compaction replace a top-k over every column. On
    the 2-core CPU that top-k cost a fifth of the matrix product's time (``make bench``, ``search``)."""
    import torch  # noqa: PLC0415

    queries, width = products.shape
    flat = (products > threshold).reshape(-1).nonzero().squeeze(1)
    if len(flat) > products.numel() // 8:
        return None
    rows = flat // width
    counts = torch.bincount(rows, minlength=queries)
    most = max(1, int(counts.max())) if len(flat) else 1
    slot = rows * most + torch.arange(len(flat), device=flat.device) - (counts.cumsum(0) - counts)[rows]
    scores = torch.full((queries * most,), -torch.inf, device=products.device)
    ids = torch.zeros(queries * most, dtype=torch.int64, device=products.device)
    scores[slot] = products.reshape(-1)[flat]
    ids[slot] = flat - rows * width + start
    return scores.view(queries, most), ids.view(queries, most)


def _blocked_top_k(queries: np.ndarray, vectors: np.ndarray, k: int, block: int, device: str = "cpu",
                   held=None, score_bytes: int | None = None, half: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: one matrix product per database block, each block's top-k merged into
    the running top-k. Blocks come from ``held`` (the slice already on the device) or from ``vectors`` on the
    host. The blocks shrink so that a block's score matrix stays within ``score_bytes`` (128 MiB on the CPU,
    1 GiB on a GPU), then to a multiple of :data:`GEMM_ROWS` rows: on this project's 2-core machine MKL's sgemm
    ran a 5,000-query block of 6,710 rows at 0.75 of its square-product peak and one of 6,144 rows at 1.0.
    On the CPU, once a query holds its top-k, a block only passes on the scores above its k-th
    (:func:`_candidates_above`).

    ``half=False``: float16 blocks are widened to float32, so scores are float32 products. ``half=True``
    (float16 rows, tensor cores): the product runs in float16 against the float16-rounded queries and keeps
    :func:`shortlist_size` candidates, which are then rescored in float32 against the unrounded queries and
    cut to ``k``: the top-k and its scores are the float32 ones unless a true neighbour fell out of the
    shortlist.

    PyTorch's GEMM and top-k rather than ``faiss.knn`` on the CPU: on this project's 2-core machine, 2,000 x
    4,096 queries against a 16,384-row block ran at about 240 GFLOPS through PyTorch and 50 through faiss.knn.
    """
    import torch  # noqa: PLC0415 - the project's own dependency; imported here so search stays light to import

    k = min(k, len(vectors))
    half = half and vectors.dtype == np.float16
    keep = min(shortlist_size(k), len(vectors)) if half else k
    score_bytes = score_bytes or (2**30 if device != "cpu" else 128 * 2**20)
    block = block_rows(block, len(vectors), len(queries), score_bytes)
    filtered = device == "cpu"  # a GPU's top-k is cheap beside the sync that compaction's nonzero() costs
    q = torch.from_numpy(queries).to(device)
    q16 = q.half() if half else None
    buffer = None if half else torch.empty((len(queries), block), device=device)
    best_scores = torch.empty((len(queries), 0), device=device)
    best_ids = torch.empty((len(queries), 0), dtype=torch.int64, device=device)

    def host_rows(start: int, stop: int):
        part = np.ascontiguousarray(vectors[start:stop])
        if not part.flags.writeable:  # a read-only memory map (train descriptors): torch wants its own
            part = part.copy()
        return torch.from_numpy(part).to(device)

    with torch.no_grad():
        for start in range(0, len(vectors), block):
            rows = held[start:start + block] if held is not None else host_rows(start, start + block)
            if half:
                products = _half_scores(q16, rows)
            else:  # into one reused buffer: a fresh 100 MB product per block costs the CPU its page faults
                products = buffer[:, :len(rows)] if len(rows) == block else None
                products = torch.mm(q, rows.float().T, out=products) if products is not None else q @ rows.float().T
            above = (_candidates_above(products, best_scores[:, -1:], start)
                     if filtered and best_scores.shape[1] == keep else None)
            if above is None:
                scores, ids = products.topk(min(keep, len(rows)), dim=1)
                ids = ids + start
            else:
                scores, ids = above
            scores = torch.cat([best_scores, scores], dim=1)
            ids = torch.cat([best_ids, ids], dim=1)
            best_scores, order = scores.topk(min(keep, scores.shape[1]), dim=1)
            best_ids = ids.gather(1, order)
        if half:
            if held is not None:
                best_scores, best_ids = _rescore(q, best_ids, lambda ids: held[ids])
            else:
                best_scores, best_ids = _rescore(q, best_ids, lambda ids: torch.from_numpy(
                    np.asarray(vectors[ids.cpu().numpy()])).to(device))
            best_scores, best_ids = best_scores[:, :k], best_ids[:, :k]
    return best_scores.cpu().numpy(), best_ids.cpu().numpy()


PQ_MIN_ROWS = 256  # PQ's k-means trains 256 centroids per sub-vector: faiss refuses fewer training points


def build_index(database: np.ndarray, use_gpu: bool | None = None, kind: str = "flat", nlist: int = 1024,
                m: int = 64, nprobe: int = 32, train_size: int = 200_000, seed: int = 0):
    """An inner-product index over ``database`` (float32 or float16): ``flat`` (exact, :class:`ExactIndex`,
    no copy, in torch on any GPU) or ``ivfpq`` (compressed, approximate, faiss; filled a chunk at a time,
    on the GPUs when faiss's build serves them)."""
    if kind == "flat":
        return ExactIndex(database, use_gpu)
    if kind != "ivfpq":
        raise ValueError(f"unknown index type '{kind}'; use flat or ivfpq")
    dim = database.shape[1]
    if dim % m:
        raise ConfigError(f"infer.index.m={m} must divide the descriptor's {dim} dimensions (PQ splits them into "
                          f"m equal parts); try m={max(d for d in range(1, min(dim, 64) + 1) if dim % d == 0)}")
    if len(database) < PQ_MIN_ROWS:
        log.warning("infer.index.type=ivfpq needs %d rows to train, the index has %d: searching it with the exact "
                    "flat index instead (faster and exact at this size)", PQ_MIN_ROWS, len(database))
        return ExactIndex(database, use_gpu)
    faiss = _faiss()
    nlist = max(1, min(nlist, len(database) // 39))  # faiss wants ~39 training points per centroid
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).choice(len(database), min(train_size, len(database)), replace=False)
    index.train(as_float32(database[np.sort(sample)]))
    index.nprobe = nprobe
    gpus = search_gpus() if use_gpu is not False and faiss_gpu_usable() else []
    chunk = rows_per_chunk(dim)
    if gpus:
        free_torch_gpu_cache()
        shards = GpuShards(index, gpus, float16=True)
        shards.fill(database, chunk)
        return shards
    for start in range(0, len(database), chunk):
        index.add(as_float32(database[start:start + chunk]))
    return index


def search(index, queries: np.ndarray, k: int, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each Q x min(k, N), best first; -1 where an approximate index found fewer.
    Queries go in chunks (``chunk`` rows, else what 256 MiB of float32 holds), each widened on its own."""
    k = min(k, index.ntotal)
    chunk = chunk or rows_per_chunk(index.d)
    scores = np.empty((len(queries), k), np.float32)
    indices = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        s, i = index.search(as_float32(queries[start:start + chunk]), k)
        scores[start:start + chunk], indices[start:start + chunk] = s, i
    return scores, indices


def knn(queries: np.ndarray, database: np.ndarray, k: int, chunk: int | None = None,
        use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k: (scores, indices), each Q x min(k, N), best first."""
    return search(build_index(database, use_gpu), queries, k, chunk)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, k: int = 100) -> float:
    """Mean fraction of each query's exact top-k that the approximate top-k also returns."""
    k = min(k, exact.shape[1], approximate.shape[1])
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) / k for a, e in zip(approximate, exact)]
    return float(np.mean(hits)) if hits else float("nan")
