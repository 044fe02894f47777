"""The folder source: labels held out whole, a split written once, every bad file one line."""

import csv
import io
import logging
import os

import pytest
from PIL import Image

from solution.config import ConfigError
from solution.data import folder
from solution.data.gldv2 import DataError, read_ids, read_solution, read_train_clean
from solution.data.toy_render import render_view


def photos(root, labels=10, views=4, size=96, start=0):
    """``root/<label>/<sub>/v<i>.<ext>``: toy landmark views, one PNG per label, the rest JPEGs."""
    for lm in range(start, start + labels):
        sub = root / f"place {lm:02d}" / "day"
        sub.mkdir(parents=True, exist_ok=True)
        for v in range(views):
            data = render_view(0, lm, (lm, v), size)
            if v == 0:
                Image.open(io.BytesIO(data)).save(sub / f"v{v}.png")
            else:
                (sub / f"v{v}.jpg").write_bytes(data)
    return root


def spec(images, **split):
    return folder.folder_spec({"images": str(images), "split": split}, images.parent)


def labels_of(root, split):
    sources = {r["id"]: r for r in csv.DictReader(open(root / folder.SOURCES))}
    return {sources[i]["label"] for i in read_ids(root / f"{split}.csv")}


def test_whole_labels_held_out_and_files_linked(tmp_path):
    images = photos(tmp_path / "photos")
    root = tmp_path / "inputs" / "mine"
    stamp = folder.build(root, spec(images))
    sources = {r["id"]: r for r in csv.DictReader(open(root / folder.SOURCES))}
    train = read_train_clean(root / "train_clean.csv")
    train_labels = {sources[i]["label"] for i in train["id"]}
    test_labels, val_labels = labels_of(root, "test"), labels_of(root, "val")
    assert len(train_labels) == 5 and len(test_labels) == 3 and len(val_labels) == 2  # 0.5 / 0.2 / rest of 10
    assert not train_labels & (test_labels | val_labels) and not test_labels & val_labels
    solution = read_solution(root / "retrieval_solution_v2.1.csv")
    index = set(read_ids(root / "index.csv"))
    for query, (relevant, usage) in solution.items():
        assert relevant and set(relevant) <= index and usage in ("Public", "Private")
        assert {sources[i]["label"] for i in relevant} == {sources[query]["label"]}
    assert stamp["counts"] == {"train": 20, "index": 15, "test": 3, "val": 2}  # 1 query of 4 (0.3), 3 left
    link = next((root / "test").rglob("*.jpg"))
    assert link.is_symlink() and os.path.realpath(link).startswith(str(images))  # referenced, not copied


def test_split_is_written_once(tmp_path, caplog):
    images = photos(tmp_path / "photos")
    root = tmp_path / "mine"
    folder.build(root, spec(images))
    before = {name: (root / name).read_text() for name in ("train.csv", "test.csv", "val.csv", "index.csv")}
    photos(images, labels=1, start=10)  # a label added later
    with caplog.at_level(logging.WARNING):
        folder.build(root, spec(images))
    assert "new files are left out" in caplog.text
    assert {name: (root / name).read_text() for name in before} == before
    with pytest.raises(ConfigError, match="split with other settings .*seed changed.*delete"):
        folder.build(root, spec(images, seed=1))
    next(images.rglob("v2.jpg")).unlink()
    with pytest.raises(DataError, match="1 images of the split .* are gone"):
        folder.build(root, spec(images))


def test_seed_moves_the_split_and_same_seed_repeats_it(tmp_path):
    images = photos(tmp_path / "photos")
    folder.build(tmp_path / "a", spec(images))
    folder.build(tmp_path / "b", spec(images))
    folder.build(tmp_path / "c", spec(images, seed=3))
    assert (tmp_path / "a/test.csv").read_text() == (tmp_path / "b/test.csv").read_text()
    assert labels_of(tmp_path / "a", "test") != labels_of(tmp_path / "c", "test")


def test_single_image_labels_and_distractors_join_the_index_unlabelled(tmp_path):
    images = photos(tmp_path / "photos")
    photos(images, labels=1, views=1, start=20)  # a label of one image
    extra = photos(tmp_path / "extra", labels=2, views=2, start=30)
    root = tmp_path / "mine"
    stamp = folder.build(root, folder.folder_spec({"images": "photos", "distractors": "extra"}, tmp_path))
    sources = {r["id"]: r for r in csv.DictReader(open(root / folder.SOURCES))}
    unlabelled = [r for r in sources.values() if not r["label"]]
    assert len(unlabelled) == 5 and all(r["split"] == "index" for r in unlabelled)
    assert stamp["counts"]["index"] == 15 + 5
    relevant = {i for ids, _ in read_solution(root / "retrieval_solution_v2.1.csv").values() for i in ids}
    assert not relevant & {r["id"] for r in unlabelled}
    assert extra.is_dir()


def test_labels_from_a_csv(tmp_path):
    images = photos(tmp_path / "photos")
    files = sorted(images.rglob("v*.*"))
    rows = ["path,label"] + [f"{p.relative_to(images)},{'even' if i % 2 else 'odd'}{i // 8}"
                             for i, p in enumerate(files)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    root = tmp_path / "mine"
    folder.build(root, folder.folder_spec({"images": "photos", "labels_csv": "labels.csv"}, tmp_path))
    names = {line.split(",", 1)[1] for line in (root / "labels.csv").read_text().split()[1:]}
    assert names == {f"{kind}{k}" for kind in ("even", "odd") for k in range(5)}


@pytest.mark.parametrize("case, message", [
    ("missing_row", r"l.csv: row 3: .*nowhere.jpg does not exist; fix the path or remove the row"),
    ("outside_row", r"l.csv: row 2: \.\./outside.jpg is outside data.images"),
    ("no_columns", r"l.csv: expected the columns path,label, found file,name"),
    ("outside_link", r"leads out of .*photos \(a link or \.\./\)"),
    ("outside_folder_link", r"elsewhere leads out of .*photos \(a link\)"),
    ("no_folder", r"data.images .*nothing is not a folder"),
])
def test_bad_sources_are_one_line(tmp_path, case, message):
    images = photos(tmp_path / "photos", labels=3, views=2)
    (tmp_path / "outside.jpg").write_bytes(render_view(0, 1, (1, 9), 64))
    first = sorted(images.rglob("*.jpg"))[0].relative_to(images)
    data = {"images": "photos"}
    if case == "missing_row":
        (tmp_path / "l.csv").write_text(f"path,label\n{first},a\nnowhere.jpg,b\n")
        data["labels_csv"] = "l.csv"
    elif case == "outside_row":
        (tmp_path / "l.csv").write_text("path,label\n../outside.jpg,a\n")
        data["labels_csv"] = "l.csv"
    elif case == "no_columns":
        (tmp_path / "l.csv").write_text("file,name\nx.jpg,a\n")
        data["labels_csv"] = "l.csv"
    elif case == "outside_link":
        os.symlink(tmp_path / "outside.jpg", images / "place 00" / "link.jpg")
    elif case == "outside_folder_link":
        (tmp_path / "away").mkdir()
        os.symlink(tmp_path / "away", images / "elsewhere")
    else:
        data["images"] = "nothing"
    with pytest.raises(DataError, match=message) as error:
        folder.build(tmp_path / "mine", folder.folder_spec(data, tmp_path))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "mine" / folder.MARKER).exists()


def test_unreadable_duplicate_and_empty_labels_are_named_once_and_left_out(tmp_path, caplog):
    images = photos(tmp_path / "photos")
    (images / "place 00" / "day" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    copy = images / "place 01" / "copy.jpg"
    copy.write_bytes((images / "place 00" / "day" / "v1.jpg").read_bytes())
    (images / "empty").mkdir()
    (images / "empty" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (images / "loose.jpg").write_bytes(render_view(0, 3, (3, 8), 64))
    with caplog.at_level(logging.WARNING):
        stamp = folder.build(tmp_path / "mine", spec(images))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("broken.jpg: unreadable image" in line for line in lines) == 1
    assert sum("bad.png: unreadable image" in line for line in lines) == 1
    assert sum("copy.jpg is the same file as" in line and "place 00" in line for line in lines) == 1
    assert sum(line == "label empty has no usable image; left out" for line in lines) == 1
    assert sum("directly under" in line and "loose.jpg" in line for line in lines) == 1
    assert sum(stamp["counts"].values()) == 40  # the 40 good files, each once
    listed = (tmp_path / "mine" / folder.SOURCES).read_text()
    assert "broken.jpg" not in listed and "copy.jpg" not in listed


@pytest.mark.parametrize("split, message", [
    ({"train": 0.9, "val": 0.1}, "leaves no label for the test queries"),
    ({"queries": 0}, "must be above 0"),
    ({"train": 1.5}, r"data.split.train=1.5 must be a fraction"),
    ({"seed": "x"}, "must be an integer"),
    ({"tests": 0.2}, r"unknown data.split keys \['tests'\]"),
])
def test_split_settings_are_checked(tmp_path, split, message):
    with pytest.raises(ConfigError, match=message):
        folder.folder_spec({"images": "p", "split": split}, tmp_path)


def test_too_few_labels_is_one_line(tmp_path):
    images = photos(tmp_path / "photos", labels=3, views=2)
    with pytest.raises(DataError, match="3 labels have 2\\+ usable images, too few .* add labels"):
        folder.build(tmp_path / "mine", spec(images))
