from PIL import Image

from solution.cli import main
from solution.data.gldv2 import image_path, read_ids


def test_cache_mirrors_layout_resizes_and_resumes(tiny_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "inputs"
    shutil.copytree(tiny_root / "toy", root / "toy")
    victim = read_ids(root / "toy/test.csv")[0]
    image_path(root / "toy", "test", victim).write_bytes(b"broken")
    args = ["preprocess", "--config", "toy-tiny", f"data.root={root}", "--size", "64", "--workers", "2"]
    assert main(args) == 0
    assert "1 unreadable" in capsys.readouterr().out
    cache = root / "cache64" / "toy"
    assert (cache / "retrieval_solution_v2.1.csv").is_file()
    for image_id in read_ids(root / "toy/index.csv"):
        with Image.open(image_path(cache, "index", image_id)) as image:
            assert max(image.size) == 64
    before = image_path(cache, "index", read_ids(root / "toy/index.csv")[0]).stat().st_mtime_ns
    assert main(args) == 0
    assert " 0 resized" in capsys.readouterr().out.replace("preprocess:", "")
    assert image_path(cache, "index", read_ids(root / "toy/index.csv")[0]).stat().st_mtime_ns == before
    # The corrupt image stays listed in the copied CSVs: extraction on the cache reports it and goes on.
    capsys.readouterr()
    common = ["--config", "toy-tiny", f"data.root={root / 'cache64'}", f"run.dir={tmp_path / 'runs'}",
              "run.workers=0", "infer.image_size=64"]
    assert main(["train", *common, "train.epochs=1", "train.tuples_per_epoch=2", "train.tuples_per_step=2",
                 "train.val_landmarks=0", "train.eval_before=false"]) == 0
    assert main(["extract", *common, "--split", "test"]) == 0
    assert "1 unreadable" in capsys.readouterr().out
