"""`train` keeps the epoch that scores best on validation, never reads test's ground truth to choose it, and
says what it selected on."""

import csv
import shutil
from types import SimpleNamespace

import pytest
import torch

from solution.cli import main
from solution.config import ConfigError
from solution.train import loop
from solution.train.selection import selection_source, selection_words


def _args(root, run_dir, *extra):
    return ["--config", "toy-tiny", f"data.root={root}", f"run.dir={run_dir}", "run.workers=0", "train.epochs=3",
            "train.transfer_check=false", *extra]


def _rows(run):
    return list(csv.DictReader(open(run / "metrics.csv")))


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_selection_never_reads_test_ground_truth(tiny_root, tmp_path, capsys):
    assert main(["train", *_args(tiny_root, tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "a/toy-tiny"
    scores = [float(r["val_queries_map"]) for r in _rows(run)]
    assert len(scores) == 3
    best = scores.index(max(scores)) + 1  # the first of equal scores
    assert f"train: selected on the validation queries (one scale): epoch {best} of 3 is kept" in out
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["summary"]["selected"]["epoch"] == best and state["summary"]["selected"]["on"] == "val_queries"
    assert round(state["summary"]["val_map_after"], 4) == scores[best - 1]  # the kept weights are that epoch's

    data = tmp_path / "no-test-truth"
    shutil.copytree(tiny_root, data)
    (data / "toy/retrieval_solution_v2.1.csv").unlink()
    assert main(["train", *_args(data, tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert [float(r["val_queries_map"]) for r in _rows(tmp_path / "b/toy-tiny")] == scores
    assert f"epoch {best} of 3 is kept" in out


def test_an_earlier_epoch_is_restored(tiny_root, tmp_path, monkeypatch, capsys):
    scored = loop.Trainer.selection_score
    epochs = iter(range(3))

    def first_is_best(self, net, row):  # the real pass (it fills the row), then a score that falls each epoch
        scored(self, net, row)
        return 1.0 - next(epochs) / 10

    monkeypatch.setattr(loop.Trainer, "selection_score", first_is_best)
    assert main(["train", *_args(tiny_root, tmp_path)]) == 0
    assert "epoch 1 of 3 is kept (mAP@100 1.0000 there)" in capsys.readouterr().out
    run = tmp_path / "toy-tiny"
    kept, best = _weights(run / "checkpoint.pt"), _weights(run / "best.pt")
    assert all(torch.equal(kept[k], best[k]) for k in kept)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and state["summary"]["selected"]["epoch"] == 1
    assert round(state["summary"]["val_map_after"], 4) == float(_rows(run)[0]["val_queries_map"])


def test_select_last_keeps_the_last_epoch(tiny_root, tmp_path, capsys):
    assert main(["train", *_args(tiny_root, tmp_path, "train.select=last", "train.epochs=2")]) == 0
    assert "train: selected on nothing: the last of train.epochs=2 epochs is kept" in capsys.readouterr().out
    assert not (tmp_path / "toy-tiny/best.pt").exists()
    assert all(r.get("val_queries_map") in (None, "") for r in _rows(tmp_path / "toy-tiny"))


def test_selection_source():
    with_val = SimpleNamespace(slug="toy", data={"val_csv": "val.csv", "val_solution_csv": "val_solution.csv"})
    without = SimpleNamespace(slug="landmark-retrieval-2021", data={})
    tcfg = {"select": "auto", "val_landmarks": 10, "epochs": 4}
    assert selection_source(with_val, tcfg) == "val_queries"
    assert selection_source(without, tcfg) == "val_landmarks"
    assert selection_source(without, {**tcfg, "val_landmarks": 0}) == "last"
    with pytest.raises(ConfigError, match="train.select=val_queries, but competition landmark-retrieval-2021"):
        selection_source(without, {**tcfg, "select": "val_queries"})
    with pytest.raises(ConfigError, match="set train.val_landmarks > 0"):
        selection_source(without, {**tcfg, "select": "val_landmarks", "val_landmarks": 0})
    words = selection_words({"epoch": 2, "score": 0.5, "on": "val_landmarks"}, tcfg)
    assert words.startswith("the 10 held-out train landmarks: epoch 2 of 4 is kept")


def test_selection_without_the_validation_ground_truth_is_said(tiny_root, tmp_path, caplog):
    """#29: train.select=auto with val_solution.csv missing kept the last epoch without a word."""
    import shutil

    from solution.competition import load_competition
    from solution.config import ConfigError
    from solution.train.selection import selection_source

    root = tmp_path / "inputs"
    shutil.copytree(tiny_root / "toy", root / "toy")
    comp = load_competition("toy")
    tcfg = {"select": "auto", "val_landmarks": 0}
    assert selection_source(comp, tcfg, root) == "val_queries"
    (root / "toy" / "val_solution.csv").unlink()
    with pytest.raises(ConfigError, match="val_solution.csv is missing.*train.select=last"):
        selection_source(comp, {**tcfg, "select": "val_queries"}, root)
    caplog.set_level("WARNING")
    assert selection_source(comp, tcfg, root) == "last"  # auto falls back, and says so
    assert "val_solution.csv is missing, so the epoch is chosen by last" in caplog.text
    assert selection_source(comp, {**tcfg, "val_landmarks": 5}, root) == "val_landmarks"
