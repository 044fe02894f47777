import shutil

import numpy as np
import pytest
import torch

from solution.competition import load_competition
from solution.config import load_config
from solution.data.gldv2 import image_path, read_ids
from solution.infer.features import MergeError, extract_split, features, merge_split, tta_tag
from solution.model import build_net

COMP = load_competition("toy")


@pytest.fixture(scope="module")
def net():
    return build_net(load_config("toy-gem")["model"]).eval()


def _infer(**changes):
    cfg = load_config("toy-gem", ["infer.image_size=64", "infer.shard_size=7", "infer.batch_size=8"])["infer"]
    cfg.update(changes)
    return cfg


def test_shards_resume_and_merge_matches_one_pass(net, tiny_root, tmp_path):
    cpu = torch.device("cpu")
    folder = extract_split(net, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)
    parts = sorted(folder.glob("part-*.npy"))
    assert len(parts) == 2  # 12 test ids in shards of 7
    first_mtime = parts[0].stat().st_mtime_ns
    parts[1].unlink()  # as if killed during the second shard
    extract_split(net, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)
    assert parts[1].is_file() and parts[0].stat().st_mtime_ns == first_mtime  # only the missing shard redone
    descriptors, ids, bad = merge_split(folder, read_ids(tiny_root / "toy/test.csv"))
    assert ids == read_ids(tiny_root / "toy/test.csv") and not bad
    assert np.allclose(np.linalg.norm(descriptors, axis=1), 1, atol=1e-2)  # float16 on disk
    merged = np.load(folder.parent / f"{folder.name}.npy")
    assert merged.dtype == np.float16 and np.array_equal(merged.astype(np.float32), descriptors)
    half, _, _ = merge_split(folder, ids, np.float16)  # what a float16 index asks for: never widened
    assert half.dtype == np.float16 and np.array_equal(half, merged)


def test_sharded_processes_then_merge_checks_ids(net, tiny_root, tmp_path):
    cpu = torch.device("cpu")
    for i in range(2):
        folder = extract_split(net, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0, shard=(i, 2))
    expected = read_ids(tiny_root / "toy/test.csv")
    assert merge_split(folder, expected)[1] == expected
    (folder / "part-00001.npy").unlink()
    with pytest.raises(MergeError, match="5 ids missing"):
        merge_split(folder, expected)
    shutil.copy(folder / "part-00000.npy", folder / "part-00001.npy")
    shutil.copy(folder / "part-00000.ids.txt", folder / "part-00001.ids.txt")
    shutil.copy(folder / "part-00000.bad.txt", folder / "part-00001.bad.txt")
    with pytest.raises(MergeError, match="7 duplicated"):
        merge_split(folder, expected)


def test_corrupt_image_gets_zero_row_and_is_reported(net, tiny_root, tmp_path):
    root = tmp_path / "inputs"
    shutil.copytree(tiny_root / "toy", root / "toy")
    victim = read_ids(root / "toy/test.csv")[3]
    image_path(root / "toy", "test", victim).write_bytes(b"\xff\xd8 truncated")
    descriptors, ids = features(net, COMP, root, "test", tmp_path / "f", _infer(), torch.device("cpu"), 0)
    assert np.all(descriptors[ids.index(victim)] == 0)
    assert (tmp_path / "f" / tta_tag(_infer()) / "test.bad.txt").read_text().split() == [victim]


def test_tta_tag_names_the_setting():
    assert tta_tag(_infer()) == "64px-s1"
    assert tta_tag(_infer(scales=["1/sqrt2", 1, "sqrt2"], flip=True)) == "64px-s3-flip-mean"


def test_leftover_temporary_shard_is_not_merged(net, tiny_root, tmp_path):
    folder = extract_split(net, COMP, tiny_root, "test", tmp_path, _infer(), torch.device("cpu"), 0)
    (folder / "part-00001.npy.tmp").write_bytes(b"half a shard from a killed run")
    expected = read_ids(tiny_root / "toy/test.csv")
    assert merge_split(folder, expected)[1] == expected


def test_merged_features_of_another_checkpoint_are_not_reused(tiny_root, tmp_path):
    """A retrained run rewrites its checkpoint: the merged split must be extracted again, not reused."""
    cpu = torch.device("cpu")
    old = build_net(load_config("toy-gem")["model"]).eval()
    old.meta["fingerprint"] = "100-1"
    first, ids = features(old, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)
    new = build_net(load_config("toy-gem")["model"]).eval()
    with torch.no_grad():
        new.head.p.fill_(6.0)  # another GeM power: other descriptors
    new.meta["fingerprint"] = "100-2"
    second, _ = features(new, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)
    direct, _ = features(new, COMP, tiny_root, "test", tmp_path / "fresh", _infer(), cpu, 0)
    assert not np.allclose(first, second, atol=1e-3)
    assert np.allclose(second, direct)
    again, _ = features(new, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)  # same checkpoint: reused
    assert np.array_equal(again, second)
