"""Revisited Oxford/Paris: the restricted unpickler, query crops, and the evaluation on a small fake set."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from solution.cli import main
from solution.data.revisitop import UnsafePickle, load_gnd, query_image


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_plain_ground_truth_loads_and_code_is_refused(tmp_path):
    gnd = {"imlist": ["a", "b"], "qimlist": ["q"],
           "gnd": [{"bbx": [1.0, 2.0, 5.0, 6.0], "easy": np.array([0]), "hard": [1], "junk": []}]}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(gnd, protocol=2))
    loaded = load_gnd(tmp_path / "ok.pkl")
    assert loaded["imlist"] == ["a", "b"] and list(loaded["gnd"][0]["easy"]) == [0]
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"imlist": _Exploit()}))
    with pytest.raises(UnsafePickle, match="refusing to load posix.system|refusing to load nt.system"):
        load_gnd(tmp_path / "evil.pkl")


def _gnd_sample():
    return {"imlist": ["a", "b"], "qimlist": ["q"], "tags": {"x", "y"}, "raw": b"\x00\xff",
            "gnd": [{"bbx": np.array([1.0, 2.0, 5.0, 6.0]), "easy": np.array([0], np.int64), "hard": [1],
                     "junk": np.array([], np.int64), "score": np.float64(0.5)}]}


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_loads_and_still_refuses_code(tmp_path, protocol):
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps(_gnd_sample(), protocol=protocol))
    loaded = load_gnd(path)
    entry = loaded["gnd"][0]
    assert loaded["imlist"] == ["a", "b"] and loaded["tags"] == {"x", "y"} and loaded["raw"] == b"\x00\xff"
    assert entry["bbx"].tolist() == [1.0, 2.0, 5.0, 6.0] and entry["easy"].dtype == np.int64
    assert entry["score"] == 0.5 and entry["junk"].size == 0
    path.write_bytes(pickle.dumps({"imlist": _Exploit()}, protocol=protocol))
    with pytest.raises(UnsafePickle, match="system"):
        load_gnd(path)


def test_python2_and_numpy1_names_load(tmp_path):
    """Protocol 0 is text: rewrite it as Python 2 / numpy 1 would have written it."""
    text = pickle.dumps(_gnd_sample(), protocol=0)
    assert b"c__builtin__\nset" in text  # Python 3 writes its Python 2 name at protocols 0-2
    old = text.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != text
    (tmp_path / "old.pkl").write_bytes(old)
    assert load_gnd(tmp_path / "old.pkl")["gnd"][0]["easy"].tolist() == [0]
    (tmp_path / "builtin.pkl").write_bytes(text.replace(b"c__builtin__\nset", b"c__builtin__\neval"))
    with pytest.raises(UnsafePickle, match="builtins.eval"):
        load_gnd(tmp_path / "builtin.pkl")


def _fake_dataset(root, n_landmarks=4, per=4):
    """A tiny revisitop-shaped set: coloured 'landmarks', one query each, easy/hard/junk indices."""
    folder = root / "roxford5k"
    (folder / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    imlist, gnd, qimlist = [], [], []
    for lm in range(n_landmarks):
        colour = rng.integers(0, 255, 3)
        members = []
        for v in range(per):
            pixels = np.clip(colour + rng.normal(0, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
            name = f"lm{lm}_{v}"
            Image.fromarray(pixels).save(folder / "jpg" / f"{name}.jpg")
            members.append(len(imlist))
            imlist.append(name)
        query = f"query{lm}"
        pixels = np.full((60, 80, 3), 255, np.uint8)
        pixels[10:40, 10:60] = np.clip(colour, 0, 255)
        Image.fromarray(pixels).save(folder / "jpg" / f"{query}.jpg")
        qimlist.append(query)
        gnd.append({"bbx": [10, 10, 60, 40], "easy": members[:2], "hard": members[2:3], "junk": members[3:]})
    (folder / "gnd_roxford5k.pkl").write_bytes(pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))
    return folder


def test_query_is_cropped_to_its_box(tmp_path):
    folder = _fake_dataset(tmp_path)
    gnd = load_gnd(folder / "gnd_roxford5k.pkl")
    crop = query_image(folder, gnd, 0)
    assert crop.size == (50, 30)
    pixels = np.asarray(crop).reshape(-1, 3)
    assert (pixels.min(axis=1) < 235).mean() > 0.99  # only the landmark: no white border left (JPEG aside)


def test_evaluate_revisitop_reports_three_protocols(tmp_path, tiny_root, capsys):
    _fake_dataset(tmp_path / "revisitop")
    run = ["--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path / 'runs'}", "run.workers=0",
           "train.epochs=1", "train.tuples_per_epoch=4", "train.tuples_per_step=2", "train.val_landmarks=0",
           "train.eval_before=false", "infer.image_size=64"]
    assert main(["train", *run]) == 0
    capsys.readouterr()
    assert main(["evaluate-revisitop", *run, "--dataset", "roxford5k", "--root", str(tmp_path / "revisitop")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["roxford5k plain", "roxford5k qe+dba"]
    for line in lines:
        values = [float(v) for v in line.split()[-5::2]]
        assert len(values) == 3 and all(0 <= v <= 100 for v in values)
