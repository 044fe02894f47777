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
        return index

    def index_cpu_to_gpu_multiple_py(self, resources, index, options, gpus):
        self.calls.append(("shard", tuple(gpus), options.shard, options.useFloat16))
        return index


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


def test_a_plain_run_shards_over_every_gpu_with_one_resource_each(fake, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    database, queries = _data()
    search.knn(queries, database, 3)
    search.knn(queries, database, 3)
    assert fake.calls == [("shard", tuple(range(8)), True, False)] * 2
    assert fake.resources == 8  # created once per GPU, reused by the second search


def test_a_torchrun_rank_searches_on_its_own_gpu_only(fake, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    database, queries = _data()
    search.knn(queries, database, 3)
    assert fake.calls == [("one", 3, False)] and fake.resources == 1


def test_ivfpq_on_gpu_uses_float16_lookup_tables(fake, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    database, _ = _data()
    search.build_index(database, kind="ivfpq", nlist=8, m=8)
    assert fake.calls == [("one", 1, True)]


def test_no_gpu_means_a_cpu_index(monkeypatch):
    monkeypatch.setattr(search, "_faiss", lambda: FakeGpuFaiss(0))
    database, queries = _data()
    scores, ids = search.knn(queries, database, 3)
    assert ids.shape == (5, 3) and (np.diff(scores, axis=1) <= 1e-6).all()
