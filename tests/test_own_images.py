"""Your own images, through the command line: new-competition -> data -> train -> submit -> evaluate, then
index and query with the trained run."""

import csv
import json

import pytest

from solution.cli import main
from solution.data.gldv2 import read_ids, read_train_clean
from tests.data.test_folder import photos


@pytest.fixture
def own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REMAP_COMPETITIONS", str(tmp_path / "competitions"))
    photos(tmp_path / "photos", labels=12, views=5)
    return tmp_path


def test_folder_competition_trains_submits_and_answers_queries(own, capsys):
    assert main(["new-competition", "mine", "--images", "photos"]) == 0
    assert "make train COMPETITION=mine" in capsys.readouterr().out
    assert main(["new-competition", "mine", "--images", "photos"]) == 2  # never overwritten
    assert "exists already" in capsys.readouterr().err

    common = ["--config", "toy-tiny", "competition=mine", "data.root=inputs", "run.workers=0"]
    assert main(["data", *common]) == 0
    assert "test queries of 4 held-out labels" in capsys.readouterr().out
    root = own / "inputs" / "mine"
    sources = {r["id"]: r for r in csv.DictReader(open(root / "sources.csv"))}
    trained = {sources[i]["label"] for i in read_train_clean(root / "train_clean.csv")["id"]}
    queried = {sources[i]["label"] for split in ("test", "val") for i in read_ids(root / f"{split}.csv")}
    assert trained and queried and not trained & queried

    assert main(["train", *common]) == 0
    out = capsys.readouterr().out
    assert "test mAP@100 before " in out and "gain " in out and "runs/toy-tiny-mine/checkpoint.pt" in out
    assert "selected on the validation queries" in out
    assert main(["submit", *common]) == 0
    assert "mAP@100 Public=" in capsys.readouterr().out
    submission = own / "submissions" / "mine-toy-tiny-mine.csv"
    assert main(["evaluate", "--competition", "mine", "--data-root", "inputs", "--submission", str(submission)]) == 0
    assert "all mAP@100=" in capsys.readouterr().out

    assert main(["index", "--images", "photos", *common]) == 0
    assert "index: 60 images of" in capsys.readouterr().out
    asked = sorted((own / "photos").rglob("v3.jpg"))[:2]
    assert main(["query", *map(str, asked), "--top", "3", "--json", *common]) == 0
    answer = json.loads(capsys.readouterr().out)
    for query, hits in zip(asked, (q["hits"] for q in answer["queries"])):
        assert len(hits) == 3 and hits[0]["path"] == str(query.resolve()) and hits[0]["score"] > 0.99
        assert hits[0]["score"] >= hits[1]["score"]
    assert (own / answer["picture"]).stat().st_size > 1000
    assert main(["query", str(asked[0]), *common]) == 0  # the last folder indexed, as lines
    assert f"    1  1.000  {asked[0].resolve()}" in capsys.readouterr().out
    assert main(["query", "photos/none.jpg", *common]) == 2
    assert "query image photos/none.jpg does not exist" in capsys.readouterr().err
