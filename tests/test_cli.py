"""The commands as a user runs them: exit codes and one-line messages."""

import json
import random

import pytest

from solution.cli import main
from solution.data.gldv2 import read_ids, read_solution


@pytest.fixture()
def solution_submission(tiny_root, tmp_path):
    """The toy ground truth written as a submission (Ignored rows get an empty ranking)."""
    root = tiny_root / "toy"
    solution = read_solution(root / "retrieval_solution_v2.1.csv")
    path = tmp_path / "perfect.csv"
    path.write_text("id,images\n" + "".join(f"{q},{' '.join(rel)}\n" for q, (rel, _) in solution.items()))
    return path


def test_evaluate_solution_scores_one(tiny_root, solution_submission, capsys):
    assert main(["evaluate", "--data-root", str(tiny_root), "--submission", str(solution_submission), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {k: result[k] for k in ("Public", "Private", "all")} == {"Public": 1.0, "Private": 1.0, "all": 1.0}
    assert result["ci95"]["all"] == [1.0, 1.0] and result["queries"]["all"] == 10


def test_shuffled_rankings_score_lower(tiny_root, solution_submission, tmp_path, capsys):
    root = tiny_root / "toy"
    index = read_ids(root / "index.csv")
    rng = random.Random(0)
    lines = ["id,images"]
    for line in solution_submission.read_text().splitlines()[1:]:
        query, images = line.split(",")
        shuffled = rng.sample(index, len(index))  # the truth, buried among everything else
        lines.append(f"{query},{' '.join(shuffled)}")
    path = tmp_path / "shuffled.csv"
    path.write_text("\n".join(lines) + "\n")
    main(["evaluate", "--data-root", str(tiny_root), "--submission", str(path), "--json"])
    assert json.loads(capsys.readouterr().out)["all"] < 0.9
    # the same queries scored twice: the paired difference, and a plain-text verdict
    main(["evaluate", "--data-root", str(tiny_root), "--submission", str(solution_submission), "--against", str(path)])
    text = capsys.readouterr().out
    assert "minus shuffled.csv: +" in text and "the interval excludes 0" in text
    main(["evaluate", "--data-root", str(tiny_root), "--submission", str(path), "--against", str(path), "--json"])
    same = json.loads(capsys.readouterr().out)["minus_against"]["all"]
    assert (same["diff"], same["low"], same["high"]) == (0.0, 0.0, 0.0)


def test_validate_ok_and_bad(tiny_root, solution_submission, tmp_path, capsys):
    assert main(["validate", "--data-root", str(tiny_root), str(solution_submission)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("id,images\n")
    assert main(["validate", "--data-root", str(tiny_root), str(bad)]) == 1
    assert "test ids have no row" in capsys.readouterr().err


def test_user_errors_are_one_line(capsys):
    assert main(["train", "--config", "toy", "train.epoch=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.epochs" in err


def test_make_ablate_heads_passes_overrides_seeds_and_variants_apart():
    """`--seeds`/`--variants` take several values: placed before the overrides they would swallow them."""
    import shlex
    import subprocess
    from pathlib import Path

    from solution.cli import build_parser

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-n", "-C", str(repo), "ablate-heads", "VENV=", "PYTHON=python", "SEEDS=0 1",
                          "VARIANTS=rmac mac", "OVERRIDES=run.name=q train.epochs=2"],
                         capture_output=True, text=True, check=True).stdout
    line = next(row for row in out.splitlines() if "ablate-heads" in row)
    args = build_parser().parse_args(shlex.split(line)[3:])
    assert args.overrides == ["run.name=q", "train.epochs=2"]
    assert args.seeds == [0, 1] and args.variants == ["rmac", "mac"]


@pytest.mark.parametrize("value, debug", [("1", True), ("true", True), ("YES", True), ("0", False),
                                          ("false", False), ("no", False), ("", False)])
def test_solution_debug_is_on_only_for_yes_values(value, debug):
    from solution.cli import debug_requested

    assert debug_requested(None, {"SOLUTION_DEBUG": value}) is debug


def test_debug_after_the_stage_name_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("SOLUTION_DEBUG", raising=False)
    with pytest.raises(Exception, match="train.image_size"):
        main(["train", "--debug", f"run.dir={tmp_path}", "train.image_size=0"])
    with pytest.raises(Exception, match="unrecognized arguments"):
        main(["--debug", "train", "--nope"])


@pytest.mark.parametrize("code, words", [(28, "no space left on device (ENOSPC); the disk is full"),
                                         (30, "read-only file system (EROFS)"),
                                         (13, "permission denied (EACCES)"),
                                         (21, "is a directory (EISDIR)")])
def test_os_errors_are_one_line_with_the_path_and_the_errno_in_words(code, words):
    import os

    from solution.cli import one_line

    line = one_line(OSError(code, os.strerror(code), "/data/runs/x/part-00001.npy"))
    assert line.startswith("/data/runs/x/part-00001.npy: ") and words in line and "\n" not in line


def test_argparse_errors_are_one_error_line(capsys):
    assert main(["submit", "--out"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --out: expected one argument")
