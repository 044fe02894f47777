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
        return object()

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


def test_a_plain_run_slices_the_database_over_every_gpu_with_one_resource_each(fake, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    database, queries = _data()
    scores, ids = search.knn(queries, database, 3)
    search.knn(queries, database, 3)
    assert fake.calls == [("one", g, False) for g in range(8)] * 2
    assert fake.resources == 8  # created once per GPU, reused by the second search
    index = search.build_index(database)
    assert [part.ntotal for part in index._gpu.parts] == [250] * 8 and index._gpu.offsets[1] == 250
    truth = np.argsort(-(queries @ database.T), axis=1)[:, :3]
    assert (ids == truth).all()  # the slices' answers merged back to global ids


def test_a_float16_database_is_stored_as_float16_on_the_gpus(fake, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    database, queries = _data()
    ids = search.knn(queries, database.astype(np.float16), 3)[1]
    assert fake.calls == [("one", g, True) for g in range(8)]
    assert (ids == np.argsort(-(queries @ database.astype(np.float16).astype(np.float32).T), axis=1)[:, :3]).all()


def test_a_torchrun_rank_searches_on_its_own_gpu_only(fake, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    database, queries = _data()
    search.knn(queries, database, 3)
    assert fake.calls == [("one", 3, False)] and fake.resources == 1


def test_ivfpq_on_gpus_uses_float16_lookup_tables(fake, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    database, queries = _data()
    index = search.build_index(database, kind="ivfpq", nlist=8, m=8)
    assert fake.calls == [("one", g, True) for g in range(8)] and index.ntotal == len(database)
    assert search.search(index, queries, 3)[1].max() >= 250  # ids from every slice, made global


def test_pytorch_gives_back_its_cached_gpu_memory_before_faiss_takes_the_gpu(fake, monkeypatch):
    import sys
    import types

    freed = []
    cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 empty_cache=lambda: freed.append(True))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    search.build_index(_data()[0])
    assert freed == [True]


def test_no_gpu_means_a_cpu_index(monkeypatch):
    monkeypatch.setattr(search, "_faiss", lambda: FakeGpuFaiss(0))
    database, queries = _data()
    scores, ids = search.knn(queries, database, 3)
    assert ids.shape == (5, 3) and (np.diff(scores, axis=1) <= 1e-6).all()
