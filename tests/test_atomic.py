import os

import pytest

from solution.atomic import (
    OWNED_MARKER,
    FolderNotOurs,
    RunBusy,
    atomic_path,
    check_replaceable,
    copy_tree,
    run_lock,
    staged_folder,
)


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


def test_a_failed_build_leaves_the_last_one_and_no_staging(tmp_path):
    target = tmp_path / "kaggle"
    with staged_folder(target, "--out") as staging:
        (staging / "model").mkdir()
        (staging / "model" / "a.pt").write_text("first")
    assert (target / "model" / "a.pt").read_text() == "first" and (target / OWNED_MARKER).is_file()
    with pytest.raises(RuntimeError), staged_folder(target, "--out") as staging:
        (staging / "model").mkdir()
        (staging / "model" / "a.pt").write_text("half")
        raise RuntimeError("pip failed")
    assert (target / "model" / "a.pt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kaggle"]  # no staging or .old left behind
    with staged_folder(target, "--out") as staging:
        (staging / "wheels").mkdir()
    assert not (target / "model").exists() and (target / "wheels").is_dir()  # replaced whole


def test_a_folder_not_built_here_is_never_replaced(tmp_path):
    users = tmp_path / "runs"
    (users / "a-run").mkdir(parents=True)
    (users / "a-run" / "checkpoint.pt").write_text("weeks of training")
    with pytest.raises(FolderNotOurs, match="did not build"), staged_folder(users, "--work"):
        pass
    assert (users / "a-run" / "checkpoint.pt").read_text() == "weeks of training"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FolderNotOurs, match="is a file"):
        check_replaceable(file, "--out")
    (tmp_path / "empty").mkdir()
    assert check_replaceable(tmp_path / "empty", "--out") == tmp_path / "empty"


def test_copy_tree_never_loops_or_leaves_its_tree(tmp_path):
    source = tmp_path / "competition"
    (source / "index" / "a").mkdir(parents=True)
    (source / "index" / "a" / "x.jpg").write_bytes(b"jpeg")
    (source / "index" / "a" / "loop").symlink_to(source, target_is_directory=True)  # a folder loop
    (source / "index" / "self").symlink_to(source / "index" / "self")  # a link to itself
    (tmp_path / "secret").write_text("outside")
    (source / "index" / "out.jpg").symlink_to(tmp_path / "secret")  # a file outside the tree
    (source / "index" / "in.jpg").symlink_to(source / "index" / "a" / "x.jpg")  # a file inside it
    skipped = copy_tree(source, tmp_path / "copy")
    copied = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert copied == ["index/a/x.jpg", "index/in.jpg"] and skipped == 3


def test_one_writer_per_run(tmp_path):
    with run_lock(tmp_path / "run", "train"):
        with pytest.raises(RunBusy, match=r"in use by `train` \(pid"), run_lock(tmp_path / "run", "submit"):
            pass
    with run_lock(tmp_path / "run", "submit"):  # released when the first ended
        pass


def test_only_the_first_rank_takes_the_lock(tmp_path, monkeypatch):
    with run_lock(tmp_path / "run", "train"):
        monkeypatch.setenv("RANK", "1")
        with run_lock(tmp_path / "run", "train"):  # rank 1 of the same job: no second lock
            pass
    assert os.environ["RANK"] == "1"


def test_a_fault_while_writing_names_the_target_not_its_temporary_sibling(tmp_path):
    """#29: a full disk while a file was written named `x.json.tmp`, a file the user never asked for."""
    import errno

    from solution.atomic import atomic_path
    from solution.cli import one_line

    target = tmp_path / "x.json"
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert one_line(info.value).startswith(f"{target}: no space left on device (ENOSPC)")
    with pytest.raises(OSError) as info, atomic_path(target):  # a write through a handle names no file
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(target)
    other = tmp_path / "elsewhere"
    with pytest.raises(OSError) as info, atomic_path(target):  # another file's fault keeps its own name
        raise OSError(errno.EACCES, "Permission denied", str(other))
    assert info.value.filename == str(other)
    assert not list(tmp_path.iterdir())


def test_a_fault_the_system_names_no_file_for_says_so():
    import errno

    from solution.cli import one_line

    assert one_line(OSError(errno.ENOSPC, "No space left on device")).startswith(
        "writing (the system named no file): no space left on device (ENOSPC)")
