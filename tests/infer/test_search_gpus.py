"""Which GPUs a search uses, with faiss's GPU calls replaced by a recorder (this machine has no GPU)."""

import numpy as np
import pytest

from solution.infer import search


class _Options:
    def __init__(self):
        self.shard, self.useFloat16 = False, False


class FakeGpuFaiss:
    """Real CPU indexes; the GPU calls record what they were asked and hand the CPU index back."""

    def __init__(self, gpus):
        import faiss

        self.real, self.gpus, self.resources, self.calls = faiss, gpus, 0, []
        self.GpuClonerOptions = self.GpuMultipleClonerOptions = _Options

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_num_gpus(self):
        return self.gpus

    def StandardGpuResources(self):  # noqa: N802 - faiss's name
        self.resources += 1
        fake = self

        class Resources:
            def setTempMemory(self, size):  # noqa: N802 - faiss's name
                fake.temp_memory = size

        return Resources()

    def index_cpu_to_gpu(self, resources, gpu, index, options):
        self.calls.append(("one", gpu, options.useFloat16))
        return self.real.clone_index(index)  # a copy, as a real GPU clone is: shards must not share storage


@pytest.fixture
def fake(monkeypatch):
    fake = FakeGpuFaiss(8)
    monkeypatch.setattr(search, "_faiss", lambda: fake)
    search.gpu_resources.cache_clear()
    yield fake
    search.gpu_resources.cache_clear()


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2000, 16), dtype=np.float32), rng.standard_normal((5, 16), dtype=np.float32)


def _cards(monkeypatch, capabilities):
    """torch sees GPUs of these compute capabilities (none: no GPU)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(capabilities))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda i=0: tuple(int(part) for part in
                                          str(capabilities[int(str(i).rsplit(":", 1)[-1])]).split(".")))


def _torch_gpu_recorder(monkeypatch):
    """Exact search asked for ``cuda:N`` runs the same code on the CPU; the devices asked for are recorded."""
    devices = []
    real = search._blocked_top_k

    def on_cpu(queries, vectors, k, block, device="cpu", held=None, score_bytes=None, half=False):
        devices.append(device)
        return real(queries, vectors, k, block, "cpu", held, score_bytes, half)

    monkeypatch.setattr(search, "_blocked_top_k", on_cpu)
    monkeypatch.setattr(search.ExactIndex, "_fits_on_device", staticmethod(lambda device, nbytes: False))
    return devices


@pytest.mark.parametrize(("capability", "faiss_on_gpu"),
                         [("6.0", False), ("7.5", True), ("8.9", True), ("9.0", False), ("12.0", False)])
def test_exact_search_runs_on_any_gpu_and_faiss_only_where_its_wheel_has_code(fake, monkeypatch, capability,
                                                                              faiss_on_gpu):
    """P100 (6.0), T4 (7.5), L4 (8.9), H100/H200 (9.0), RTX Pro (12.0): exact search, QE and DBA always run on
    every GPU through torch, the database split between them; IVF-PQ uses faiss's GPU index only where its
    sm_70/sm_80 code runs, else CPU faiss."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _cards(monkeypatch, [capability, capability])
    devices = _torch_gpu_recorder(monkeypatch)
    database, queries = _data()
    ids = search.knn(queries, database, 3)[1]
    assert sorted(devices) == ["cuda:0", "cuda:1"] and fake.calls == []  # faiss's GPU index: never for exact
    assert (ids == np.argsort(-(queries @ database.T), axis=1)[:, :3]).all()
    index = search.build_index(database, kind="ivfpq", nlist=8, m=8)
    assert bool(fake.calls) is faiss_on_gpu
    assert isinstance(index, search.GpuShards) is faiss_on_gpu
    assert search.search(index, queries, 3)[1].shape == (5, 3)


def test_a_torchrun_rank_searches_exactly_on_its_own_gpu(fake, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "11")
    _cards(monkeypatch, ["7.5"] * 8)
    devices = _torch_gpu_recorder(monkeypatch)
    database, queries = _data()
    search.knn(queries, database, 3)
    assert devices == ["cuda:3"]


def test_no_gpu_means_exact_search_on_the_cpu(fake, monkeypatch):
    _cards(monkeypatch, [])
    assert search.torch_search_device() == "cpu" and search.torch_search_device(use_gpu=False) == "cpu"


def test_the_held_database_path_ranks_as_the_streamed_one():
    """The path a GPU takes when the database fits its memory (uploaded once, as its own dtype), run on the CPU."""
    database, queries = _data()
    half = database.astype(np.float16)
    streamed = search.ExactIndex(half, device="cpu", hold=False, block=300)
    held = search.ExactIndex(half, device="cpu", hold=True, block=300)
    assert held._held[0] is not None and held._held[0].dtype.itemsize == 2  # float16 on the device, not widened
    s1, i1 = search.search(streamed, queries, 20)
    s2, i2 = search.search(held, queries, 20)
    assert (i1 == i2).all() and np.allclose(s1, s2)
    half[:] = 0  # changed in place: a rebuild reloads the held copy
    held.rebuild()
    assert float(np.abs(search.search(held, queries, 20)[0]).max()) == 0.0


def test_gpu_shards_slice_the_database_over_every_gpu_with_one_resource_each(fake, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    database, queries = _data()
    for _ in range(2):
        shards = search.GpuShards(fake.IndexFlatIP(16), search.search_gpus(), float16=False)
        shards.fill(database, 128)
    assert fake.calls == [("one", g, False) for g in range(8)] * 2
    assert fake.resources == 8  # created once per GPU, reused by the second index
    assert [part.ntotal for part in shards.parts] == [250] * 8 and shards.offsets[1] == 250
    ids = search.search(shards, queries, 3)[1]
    assert (ids == np.argsort(-(queries @ database.T), axis=1)[:, :3]).all()  # merged back to global ids


def test_a_torchrun_rank_uses_faiss_on_its_own_gpu_only(fake, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert search.search_gpus() == [3]


def test_ivfpq_on_gpus_uses_float16_lookup_tables(fake, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _cards(monkeypatch, ["7.5"] * 8)
    database, queries = _data()
    index = search.build_index(database, kind="ivfpq", nlist=8, m=8)
    assert fake.calls == [("one", g, True) for g in range(8)] and index.ntotal == len(database)
    assert search.search(index, queries, 3)[1].max() >= 250  # ids from every slice, made global


def test_pytorch_gives_back_its_cached_gpu_memory_before_faiss_takes_the_gpu(fake, monkeypatch):
    import torch

    freed = []
    _cards(monkeypatch, ["7.5"] * 8)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    search.build_index(_data()[0], kind="ivfpq", nlist=8, m=8)
    assert freed == [True]


class _GpuLimitedIndex:
    """A GPU index as faiss has it: k above 2,048 is refused (GPU_MAX_SELECTION_K)."""

    def __init__(self, index):
        self.index = index

    def __getattr__(self, name):
        return getattr(self.index, name)

    def search(self, queries, k):
        if k > 2048:
            raise RuntimeError("Error: 'k > 0 && k <= GPU_MAX_SELECTION_K' failed: k must be <= 2048 for GPU")
        return self.index.search(queries, k)


def test_a_gpu_index_is_never_asked_for_more_than_2048_neighbours(fake, monkeypatch, caplog):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    fake.gpus = 1
    real_clone = fake.index_cpu_to_gpu
    monkeypatch.setattr(fake, "index_cpu_to_gpu", lambda *a: _GpuLimitedIndex(real_clone(*a)))
    rng = np.random.default_rng(0)
    database = rng.standard_normal((3000, 16), dtype=np.float32)
    shards = search.GpuShards(fake.IndexFlatIP(16), search.search_gpus(), float16=False)
    shards.fill(database, 500)
    scores, ids = search.search(shards, database[:3], 2500)
    assert ids.shape == (3, 2500) and (ids[:, :2048] >= 0).all() and (ids[:, 2048:] == -1).all()
    assert np.isneginf(scores[:, 2048:]).all() and "at most 2048 neighbours" in caplog.text


def test_faiss_gpu_scratch_memory_is_bounded(fake, monkeypatch):
    """faiss's default keeps 1.5 GiB per GPU for the whole process; IVF-PQ gets 512 MiB, PyTorch the rest."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    search.gpu_resources(0)
    assert fake.temp_memory == 512 * 2**20


def test_the_database_split_over_devices_ranks_as_one():
    """Three slices (three 'devices', here all the CPU), merged: the same top-k as one device, ids global."""
    database, queries = _data()
    one = search.search(search.ExactIndex(database, device="cpu"), queries, 50)
    three = search.ExactIndex(database, device=["cpu"] * 3, block=128)
    assert three.bounds == [0, 667, 1333, 2000]
    split = search.search(three, queries, 50)
    assert (split[1] == one[1]).all() and np.allclose(split[0], one[0])
    assert search.search(search.ExactIndex(database[:2], device=["cpu"] * 3), queries, 5)[1].shape == (5, 2)


@pytest.mark.parametrize("hold", [True, False])
def test_the_float16_product_with_float32_rescoring_ranks_as_float32(hold):
    """The tensor-core path (float16 product, output rounded to float16 as the harsher case) keeps a shortlist
    and rescores it in float32: order and scores match the float32 product's on clustered data, held or
    streamed; the unrescored float16 scores alone would differ by their rounding."""
    from solution.studies.bench import clustered_unit_rows

    rows, _ = clustered_unit_rows(3100, 256, 60, 2.0, np.random.default_rng(3))
    database, queries = rows[:3000].astype(np.float16), rows[3000:]
    exact = search.search(search.ExactIndex(database, device="cpu", half=False), queries, 40)
    half = search.ExactIndex(database, device="cpu", half=True, hold=hold, block=700)
    assert half.half == [True]
    fast = search.search(half, queries, 40)
    assert np.abs(fast[0] - exact[0]).max() < 1e-5
    assert np.mean([len(set(a) & set(b)) / 40 for a, b in zip(fast[1], exact[1])]) > 0.999


@pytest.mark.parametrize(("capability", "half"), [(None, False), ("6.0", False), ("7.5", True), ("9.0", True)])
def test_float16_products_only_where_tensor_cores_are(monkeypatch, capability, half):
    _cards(monkeypatch, [capability] if capability else [])
    assert search.tensor_core_half(search.torch_search_device()) is half
    index = search.ExactIndex(np.zeros((10, 8), np.float16), hold=False)
    assert index.half == [half]
    assert search.ExactIndex(np.zeros((10, 8), np.float32), hold=False).half == [False]


def test_the_float16_agreement_measure_reports_the_rescored_ranking_exact():
    from solution.studies.bench import half_product_agreement

    row = half_product_agreement(n_index=4000, n_queries=40, dim=256, k=50, per_cluster=60, spread=2.0)
    assert row["overlap_worst"] >= 0.98 and row["largest_score_difference"] < 1e-5
    assert row["map_float16"] == pytest.approx(row["map_float32"], abs=1e-3)
