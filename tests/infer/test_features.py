import json
import shutil

import numpy as np
import pytest
import torch

from solution.competition import load_competition
from solution.config import load_config
from solution.data.gldv2 import image_path, read_ids
from solution.infer.features import (
    SEARCH_ONLY,
    CacheError,
    MergeError,
    extract_split,
    extraction_key,
    features,
    merge_split,
    tta_tag,
)
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
    assert tta_tag(_infer()).startswith("64px-s1-")
    assert tta_tag(_infer(scales=["1/sqrt2", 1, "sqrt2"], flip=True)).startswith("64px-s3-flip-mean-")
    assert tta_tag(_infer(scales=["sqrt2"])) == tta_tag(_infer(scales=[2 ** 0.5]))  # one setting, one folder


def _changed(value):
    """Another value of the same kind (what an override would give)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, list):
        return [*value, 2]
    if isinstance(value, str):
        return {"mean": "gem", "float16": "float32"}.get(value, value + "x")
    if isinstance(value, dict):
        return {**value, "changed": True}
    return "changed"


def test_every_extraction_key_changes_the_cache_key_and_no_search_key_does():
    """The key comes from the whole infer section, so a key added later is covered without being listed."""
    base = _infer(scales=[1, 2], combine="mean", combine_p=3.0)
    extraction = [k for k in base if k not in SEARCH_ONLY]
    assert {"image_size", "scales", "flip", "combine", "combine_p", "dtype"} <= set(extraction)
    for key in extraction:
        assert extraction_key({**base, key: _changed(base[key])}) != extraction_key(base), key
        assert tta_tag({**base, key: _changed(base[key])}) != tta_tag(base), key
    for key in SEARCH_ONLY:
        if key in base:
            assert extraction_key({**base, key: _changed(base[key])}) == extraction_key(base), key
    assert extraction_key(_infer(scales=[1, 2])) != extraction_key(_infer(scales=[0.5, 1]))  # values, not counts
    assert extraction_key({**base, "a_key_added_later": 1}) != extraction_key(base)


def test_features_of_other_scale_values_are_not_reused(net, tiny_root, tmp_path):
    cpu = torch.device("cpu")
    first, _ = features(net, COMP, tiny_root, "test", tmp_path, _infer(scales=[1, 2]), cpu, 0)
    second, _ = features(net, COMP, tiny_root, "test", tmp_path, _infer(scales=[0.5, 1]), cpu, 0)
    direct, _ = features(net, COMP, tiny_root, "test", tmp_path / "fresh", _infer(scales=[0.5, 1]), cpu, 0)
    assert not np.allclose(first, second, atol=1e-3) and np.array_equal(second, direct)


@pytest.mark.parametrize("damage", ["int64 merged", "float64 merged", "narrow merged", "truncated shard",
                                    "wide shard", "shard without ids"])
def test_damaged_cached_features_are_refused_by_name(net, tiny_root, tmp_path, damage):
    cpu = torch.device("cpu")
    rows, _ = features(net, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)
    folder = tmp_path / tta_tag(_infer()) / "test"
    merged = folder.parent / "test.npy"
    part = folder / "part-00000.npy"
    if damage.endswith("merged"):
        kind, target = damage.split()[0], merged
        bad = {"int64": rows.astype(np.int64), "float64": rows.astype(np.float64), "narrow": rows[:, :7]}[kind]
        np.save(merged, bad.astype(np.float16) if kind == "narrow" else bad)
    else:
        merged.unlink()
        target = part
        if damage == "truncated shard":
            part.write_bytes(part.read_bytes()[:100])
        elif damage == "wide shard":
            np.save(part, np.zeros((7, net.dim + 1), np.float16))
        else:
            part.with_suffix(".ids.txt").unlink()
    with pytest.raises(CacheError, match=str(target)):
        features(net, COMP, tiny_root, "test", tmp_path, _infer(), cpu, 0)


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


def _as_rank(monkeypatch, rank, world, rank0_todo=None):
    """extract_split as one rank of a torchrun job: collectives recorded; rank 0's shard list broadcast."""
    from solution.distributed import Dist
    from solution.infer import features as module

    calls, described = [], []
    monkeypatch.setattr(module, "barrier", lambda info: calls.append("barrier"))

    def broadcast(info, obj):
        calls.append(("broadcast", obj))
        return obj if rank0_todo is None else rank0_todo

    monkeypatch.setattr(module, "broadcast_object", broadcast)

    def fake_extract(net, paths, *args, desc="", **kwargs):
        described.append(desc)
        return np.zeros((len(paths), net.dim), np.float32), np.ones(len(paths), bool)

    monkeypatch.setattr(module, "extract_descriptors", fake_extract)
    return Dist(rank, world, rank), calls, described


def test_under_torchrun_only_rank0_touches_the_manifest_and_stale_shards(net, tiny_root, tmp_path, monkeypatch):
    folder = tmp_path / tta_tag(_infer()) / "test"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"checkpoint": "an older one"}')
    (folder / "part-00000.npy").write_bytes(b"stale")
    info, calls, described = _as_rank(monkeypatch, rank=1, world=2, rank0_todo=[0, 1])
    extract_split(net, COMP, tiny_root, "test", tmp_path, _infer(), torch.device("cpu"), 0, (1, 2), info)
    assert (folder / "manifest.json").read_text() == '{"checkpoint": "an older one"}'  # rank 0's to rewrite
    assert calls[0] == "barrier"  # rank 1 waits for rank 0's manifest before anything else
    assert described == ["test 2/2"]  # rank 1 takes the second of rank 0's two shards to do


def test_a_resume_with_another_world_size_splits_what_is_left_evenly(net, tiny_root, tmp_path, monkeypatch):
    infer = _infer(shard_size=2)  # 12 test ids: 6 shards
    folder = extract_split(net, COMP, tiny_root, "test", tmp_path, infer, torch.device("cpu"), 0)
    for j in (1, 3, 4, 5):
        (folder / f"part-{j:05d}.npy").unlink()  # killed: shards 0 and 2 survive (both of rank 0 of 2)
    info, calls, described = _as_rank(monkeypatch, rank=0, world=3)
    extract_split(net, COMP, tiny_root, "test", tmp_path, infer, torch.device("cpu"), 0, (0, 3), info)
    assert ("broadcast", [1, 3, 4, 5]) in calls
    assert described == ["test 2/6", "test 6/6"]  # rank 0 of 3 takes the left shards 1 and 5


def test_validation_queries_that_are_test_queries_are_refused(tiny_root, tmp_path):
    """#29: with val.csv equal to test's, `tune` said "selected on validation" while choosing on test."""
    import shutil

    from solution.competition import load_competition
    from solution.data.gldv2 import DataError
    from solution.infer.features import split_ids

    root = tmp_path / "inputs"
    shutil.copytree(tiny_root / "toy", root / "toy")
    comp = load_competition("toy")
    assert split_ids(comp, root, "val")  # the generated split is apart from test and index
    shutil.copy(root / "toy" / "test.csv", root / "toy" / "val.csv")
    with pytest.raises(DataError) as info:
        split_ids(comp, root, "val")
    message = str(info.value)
    assert "val.csv shares" in message and "test.csv" in message and "\n" not in message


def _shards(folder, rows, ids, size=4):
    folder.mkdir(parents=True, exist_ok=True)
    for j, start in enumerate(range(0, len(ids), size)):
        np.save(folder / f"part-{j:05d}.npy", rows[start:start + size])
        (folder / f"part-{j:05d}.ids.txt").write_text("\n".join(ids[start:start + size]) + "\n")
        (folder / f"part-{j:05d}.bad.txt").write_text("")


def test_a_merge_refuses_nan_rows_device_links_and_another_order(tmp_path):
    """#29: NaN rows were merged and scored (mAP 0.05, exit 0); an ids file linked to /dev/zero was read without
    end; shards listing the ids in another order were merged."""
    from solution.infer.features import CacheError, MergeError, merge_split

    ids = [f"{i:016x}" for i in range(8)]
    rows = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    _shards(tmp_path / "ok", rows, ids)
    assert merge_split(tmp_path / "ok", ids)[1] == ids
    _shards(tmp_path / "order", rows[::-1].copy(), ids[::-1])
    with pytest.raises(MergeError, match="made for another image list"):
        merge_split(tmp_path / "order", ids)
    rows[5, 2] = np.nan
    _shards(tmp_path / "nan", rows, ids)
    with pytest.raises(CacheError, match=r"part-00001.npy holds NaN or inf descriptors \(first at row 1\)"):
        merge_split(tmp_path / "nan", ids)
    _shards(tmp_path / "device", rows, ids)
    (tmp_path / "device" / "part-00000.ids.txt").unlink()
    (tmp_path / "device" / "part-00000.ids.txt").symlink_to("/dev/zero")
    with pytest.raises(CacheError, match="part-00000.ids.txt is not a regular file"):
        merge_split(tmp_path / "device", ids)


def test_shards_without_a_manifest_or_of_another_image_list_are_discarded(tiny_root, tmp_path, caplog):
    """#29: shards with no manifest were merged under a fresh one naming the current checkpoint, and the cache
    was keyed by the image count: another list of as many images reused it."""
    from solution.infer.features import extract_split, ids_digest

    cfg = load_config("toy-tiny", ["model.pretrained=none", "model.whiten_dim=0"])
    net = build_net(cfg["model"]).eval()
    comp = load_competition("toy")
    folder = tmp_path / "features" / tta_tag(cfg["infer"]) / "index"
    folder.mkdir(parents=True)
    (folder / "part-00000.npy").write_bytes(b"left by someone")
    caplog.set_level("WARNING")
    extract_split(net, comp, tiny_root, "index", tmp_path / "features", cfg["infer"], torch.device("cpu"), 0)
    assert "shards without a manifest" in caplog.text
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["ids_sha1"] == ids_digest(read_ids(tiny_root / "toy" / "index.csv"))
    assert np.load(folder / "part-00000.npy").shape[1] == net.dim  # extracted again, not the stray bytes
