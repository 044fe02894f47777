import hashlib

from solution.data import toy
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


def test_train_landmarks_disjoint_from_index(tiny_root):
    images = toy.plan(0, toy.SIZES["tiny"])
    train = {im.label for im in images if im.split == "train"}
    index = {im.label for im in images if im.split == "index" and im.label is not None}
    assert train and index and not train & index


def test_train_clean_drops_noisy_rows(tiny_root):
    root = tiny_root / "toy"
    full, clean = read_train(root / "train.csv"), read_train_clean(root / "train_clean.csv")
    assert set(clean["id"]) < set(full["id"])
    noisy = [im for im in toy.plan(0, toy.SIZES["tiny"]) if im.split == "train" and im.landmark is None]
    assert {im.image_id for im in noisy} == set(full["id"]) - set(clean["id"])


def test_deterministic_and_seeded(tmp_path):
    a = toy.render_view(0, 3, (0, 1), 96)
    assert a == toy.render_view(0, 3, (0, 1), 96)
    assert a != toy.render_view(1, 3, (0, 1), 96)
    toy.generate(tmp_path / "x", "tiny", seed=0, workers=2)
    digest = hashlib.md5((tmp_path / "x" / "retrieval_solution_v2.1.csv").read_bytes()).hexdigest()
    toy.generate(tmp_path / "y", "tiny", seed=0, workers=1)
    assert hashlib.md5((tmp_path / "y" / "retrieval_solution_v2.1.csv").read_bytes()).hexdigest() == digest


def test_contact_sheet(tiny_root, tmp_path):
    out = data_contact_sheet(tiny_root / "toy", tmp_path / "sheet.png", landmarks=3, views=3)
    assert out.stat().st_size > 1000
