import pytest
import torch

from solution.data import toy


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A tiny toy competition, generated once: data root whose ``toy/`` holds the files."""
    root = tmp_path_factory.mktemp("inputs")
    toy.generate(root / "toy", size="tiny", seed=0, workers=1)
    return root
