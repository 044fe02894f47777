import pytest

from solution.atomic import atomic_path


def test_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "x.npy"
    with atomic_path(target) as tmp:
        assert not tmp.name.endswith(".npy")  # a leftover is never taken for data by *.npy globs
        tmp.write_text("new")
    assert target.read_text() == "new" and list(target.parent.iterdir()) == [target]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new" and list(target.parent.iterdir()) == [target]
