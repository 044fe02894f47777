import hashlib
import json

from solution.data import toy, toy_render
from solution.data.gldv2 import image_path, is_valid_id, read_ids, read_solution, read_train, read_train_clean
from solution.viz import data_contact_sheet


def test_layout_and_csvs(tiny_root):
    root = tiny_root / "toy"
    for name in ("train.csv", "train_clean.csv", "index.csv", "test.csv", "retrieval_solution_v2.1.csv",
                 "sample_submission.csv"):
        assert (root / name).is_file(), name
    train, index, test = read_train(root / "train.csv"), read_ids(root / "index.csv"), read_ids(root / "test.csv")
    for split, ids in (("train", train["id"]), ("index", index), ("test", test)):
        for image_id in ids:
            assert is_valid_id(image_id)
            assert image_path(root, split, image_id).is_file()
    spec = toy.SIZES["tiny"]
    assert len(test) == spec.queries + spec.nonlandmark_queries
    assert len(index) == spec.index_landmarks * spec.index_views[0] + spec.index_distractors


def test_solution_has_ignored_nonlandmarks_and_index_only_targets(tiny_root):
    root = tiny_root / "toy"
    solution = read_solution(root / "retrieval_solution_v2.1.csv")
    index = set(read_ids(root / "index.csv"))
    usages = [usage for _, usage in solution.values()]
    assert usages.count("Ignored") == toy.SIZES["tiny"].nonlandmark_queries
    assert {"Public", "Private"} <= set(usages)
    for relevant, usage in solution.values():
        assert (usage == "Ignored") == (not relevant)
        assert set(relevant) <= index


def test_index_landmarks_overlap_train_like_gldv2():
    for size in ("tiny", "default"):
        spec = toy.SIZES[size]
        images = toy.layout(0, spec)
        train = {im.landmark for im in images if im.split == "train" and im.landmark is not None}
        queried = {im.landmark for im in images if im.split == "test" and im.landmark is not None}
        index = {im.landmark for im in images if im.split == "index" and im.label is not None}
        assert len(index) == spec.index_landmarks and len(index & train) == spec.shared_landmarks
        assert index - train  # some landmarks never appear in train
        assert queried <= index
        # a shared landmark is shown by other photographs, never the same image
        train_ids = {im.image_id for im in images if im.split == "train"}
        assert not train_ids & {im.image_id for im in images if im.split != "train"}


def test_default_size_meets_the_competition_shape():
    spec = toy.SIZES["default"]
    images = toy.layout(0, spec)
    index = [im for im in images if im.split == "index"]
    assert sum(im.label is not None for im in index) >= 1500 and sum(im.label is None for im in index) >= 1000
    assert sum(im.split == "test" and im.label is not None for im in images) >= 400
    assert spec.shared_fraction == 0.75


def test_index_numbering_differs_from_train_and_recognition_uses_train_ids(tiny_root):
    root = tiny_root / "toy"
    images = {im.image_id: im for im in toy.layout(0, toy.SIZES["tiny"])}
    train = read_train(root / "train.csv")
    train_id = {images[i].label: int(lm) for i, lm in zip(train["id"], train["landmark_id"])}
    index_rows = [line.split(",") for line in (root / "index_image_to_landmark.csv").read_text().split()[1:]]
    index_id = {}
    for image_id, landmark_id in index_rows:
        landmark = images[image_id].landmark
        assert index_id.setdefault(landmark, int(landmark_id)) == int(landmark_id)  # one id per landmark
    shared = set(index_id) & set(train_id)
    assert shared and all(index_id[lm] != train_id[lm] for lm in shared)  # renumbered
    assert len(set(index_id.values())) == len(index_id)
    rows = [line.split(",") for line in (root / "recognition_solution_v2.1.csv").read_text().splitlines()[1:]]
    assert len(rows) == len(read_ids(root / "test.csv"))
    for image_id, landmarks, usage in rows:
        landmark = images[image_id].landmark
        expected = str(train_id[landmark]) if landmark in train_id else ""
        assert landmarks == expected and usage in ("Public", "Private")
    assert any(r[1] for r in rows) and any(not r[1] for r in rows)


def test_a_set_from_another_generator_is_replaced(tmp_path):
    root = toy.generate(tmp_path / "t", "tiny", seed=0, workers=1)
    stale = image_path(root, "test", read_ids(root / "test.csv")[0])
    stale.write_bytes(b"from an older generator")
    toy.generate(root, "tiny", seed=0, workers=1)
    assert stale.read_bytes() == b"from an older generator"  # kept: the marker matches, so nothing is redone
    marker = json.loads((root / "toy.json").read_text())
    (root / "toy.json").write_text(json.dumps({**marker, "generator": 1}))
    toy.generate(root, "tiny", seed=0, workers=1)
    assert stale.read_bytes().startswith(b"\xff\xd8")  # regenerated as a JPEG


def test_train_clean_drops_noisy_rows(tiny_root):
    root = tiny_root / "toy"
    full, clean = read_train(root / "train.csv"), read_train_clean(root / "train_clean.csv")
    assert set(clean["id"]) < set(full["id"])
    noisy = [im for im in toy.layout(0, toy.SIZES["tiny"]) if im.split == "train" and im.landmark is None]
    assert {im.image_id for im in noisy} == set(full["id"]) - set(clean["id"])


def test_deterministic_and_seeded(tmp_path):
    a = toy_render.render_view(0, 3, (0, 1), 96)
    assert a == toy_render.render_view(0, 3, (0, 1), 96)
    assert a != toy_render.render_view(1, 3, (0, 1), 96)
    toy.generate(tmp_path / "x", "tiny", seed=0, workers=2)
    digest = hashlib.md5((tmp_path / "x" / "retrieval_solution_v2.1.csv").read_bytes()).hexdigest()
    toy.generate(tmp_path / "y", "tiny", seed=0, workers=1)
    assert hashlib.md5((tmp_path / "y" / "retrieval_solution_v2.1.csv").read_bytes()).hexdigest() == digest


def test_contact_sheet(tiny_root, tmp_path):
    out = data_contact_sheet(tiny_root / "toy", tmp_path / "sheet.png", landmarks=3, views=3)
    assert out.stat().st_size > 1000


def test_validation_queries_are_drawn_like_test_and_scored_against_the_index(tiny_root):
    root = tiny_root / "toy"
    spec = toy.SIZES["tiny"]
    val, test, index = read_ids(root / "val.csv"), read_ids(root / "test.csv"), set(read_ids(root / "index.csv"))
    assert len(val) == spec.val_queries + spec.val_nonlandmark_queries and not set(val) & set(test)
    assert all(image_path(root, "val", i).is_file() for i in val)
    solution = read_solution(root / "val_solution.csv")
    assert set(solution) == set(val)
    usages = [usage for _, usage in solution.values()]
    assert usages.count("Ignored") == spec.val_nonlandmark_queries
    assert all(set(images) <= index for images, usage in solution.values() if usage != "Ignored")
    default = toy.SIZES["default"]
    assert default.val_queries >= 400  # enough scored queries to rank choices
    plan = toy.layout(0, default)
    test_kinds = sorted({(im.landmark is None, im.landmark is not None and im.landmark < default.train_landmarks)
                         for im in plan if im.split == "test"})
    val_kinds = sorted({(im.landmark is None, im.landmark is not None and im.landmark < default.train_landmarks)
                        for im in plan if im.split == "val"})
    assert val_kinds == test_kinds  # shared landmarks, novel ones and no landmark, in both


def test_the_validation_split_leaves_every_other_image_and_file_as_it_was(tmp_path):
    import dataclasses

    spec = toy.SIZES["tiny"]
    without = dataclasses.replace(spec, val_queries=0, val_nonlandmark_queries=0)
    full, bare = toy.layout(0, spec), toy.layout(0, without)
    assert [im for im in full if im.split != "val"] == bare
    for name, images in (("full", full), ("bare", bare)):
        (tmp_path / name).mkdir()
        toy.write_csvs(tmp_path / name, 0, images)
    for name in ("train.csv", "train_clean.csv", "index.csv", "test.csv", "retrieval_solution_v2.1.csv",
                 "recognition_solution_v2.1.csv", "sample_submission.csv", "index_image_to_landmark.csv"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "bare" / name).read_bytes(), name
