"""data -> train (one short epoch) -> submit -> evaluate, on the tiny toy set, through the CLI."""

import csv
import json

import solution.studies.tables  # noqa: F401 - registers every result kind's table
from solution.cli import main
from solution.results import load_result, render


def test_tiny_pipeline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--config", "toy-tiny", "data.root=inputs", "run.workers=0"]
    assert main(["data", *common]) == 0
    assert main(["train", *common]) == 0
    out = capsys.readouterr().out
    assert "before" in out and "runs/toy-tiny/checkpoint.pt" in out
    assert "train: selected on the validation queries (one scale): epoch 1 of 1 is kept" in out  # test only reports
    assert (tmp_path / "runs/toy-tiny/config.yaml").is_file()
    assert (tmp_path / "runs/toy-tiny/plots/curves.png").is_file()
    rows = list(csv.DictReader(open(tmp_path / "runs/toy-tiny/metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["loss"]) >= 0
    trained = load_result(tmp_path / "runs/toy-tiny/train.json")  # what `make results` renders
    assert trained["kind"] == "train" and {"test", "validation"} <= set(trained)
    assert trained["validation"]["after"]["queries"] > 0 and trained["provenance"]["command"].endswith("run.workers=0")
    assert "| gain, paired |" in render(trained)

    assert (tmp_path / "runs/toy-tiny/initial.pt").is_file()  # off the shelf, for the transfer check
    assert main(["transfer", *common]) == 0
    out = capsys.readouterr().out
    assert "real photos mAP@100 over 176 hard views of 11 photographs: off the shelf" in out and "margin -0.02" in out
    assert (tmp_path / "runs/toy-tiny/transfer.json").is_file()

    assert main(["train", *common]) == 0  # finished: does nothing, says so
    assert "already finished" in capsys.readouterr().out

    assert main(["submit", *common]) == 0
    assert "validated" in capsys.readouterr().out
    assert set(load_result(tmp_path / "runs/toy-tiny/submit.json")["parts"]) == {"Public", "Private", "all"}
    submission = tmp_path / "submissions/toy-toy-tiny.csv"
    assert main(["validate", "--data-root", "inputs", str(submission)]) == 0
    assert main(["evaluate", "--data-root", "inputs", "--submission", str(submission)]) == 0
    assert "all mAP@100=" in capsys.readouterr().out

    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    assert main(["submit", *common, "--kaggle"]) == 2
    err = capsys.readouterr().err
    assert "no Kaggle credentials found" in err and f"stays at {submission.relative_to(tmp_path)}" in err
    assert submission.is_file()

    assert main(["viz", "retrieval", *common]) == 0
    assert "(ranking of features 96px-s1-" in capsys.readouterr().out  # what made the picture, from ranking.npz
    assert (tmp_path / "runs/toy-tiny/plots/retrieval.png").stat().st_size > 1000

    assert main(["extract", *common, "--split", "train", "infer.flip=true"]) == 0
    assert "unreadable; wrote" in capsys.readouterr().out

    assert main(["ablate", *common]) == 0
    out = capsys.readouterr().out
    assert "| + label re-ranking" in out and "ablate: selected on validation" in out
    first = json.loads((tmp_path / "runs/toy-tiny/ablation.json").read_text())
    tune = ["tune", *common, "infer.qe.enabled=true", "infer.label_rerank.enabled=true",
            "--grid", "qe.n=1,2,3", "label_rerank.min_confidence=0,1,2"]
    assert main(tune) == 0
    assert "tune: selected on validation" in capsys.readouterr().out
    tuned = json.loads((tmp_path / "runs/toy-tiny/tune.json").read_text())
    assert "test" in tuned
    assert first["selection"] == {"split": "val", "part": "all"} and "Public" in first["rows"][0]
    # selection never reads test's ground truth: without it, the same steps are kept and the same one is best
    (tmp_path / "inputs/toy/retrieval_solution_v2.1.csv").unlink()
    assert main(["ablate", *common]) == 0
    second = json.loads((tmp_path / "runs/toy-tiny/ablation.json").read_text())
    assert [r["kept"] for r in second["rows"]] == [r["kept"] for r in first["rows"]]
    assert second["best"] == first["best"] and "Public" not in second["rows"][0]
    assert main(tune) == 0
    retuned = json.loads((tmp_path / "runs/toy-tiny/tune.json").read_text())
    assert retuned["chosen"] == tuned["chosen"] and retuned["trials"] == tuned["trials"] and "test" not in retuned
