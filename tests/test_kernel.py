"""The offline kernel path: build the folders, fake /kaggle/input from the tiny toy set, run the entry
script with the network blocked and the package installed from the wheels dataset, validate its output."""

import json
import os
import shutil
import subprocess
import sys

from solution.cli import main
from solution.data.gldv2 import read_ids
from solution.infer.submission import validate_submission
from solution.kernel.run import degrade


def test_degrade_drops_flip_then_scales():
    cfg = {"scales": ["1/sqrt2", 1, "sqrt2"], "flip": True}
    first = degrade(cfg)
    assert first["flip"] is False and len(first["scales"]) == 3
    second = degrade(first)
    assert second["scales"] == [1]
    assert degrade(second) is None


def _network_blocker() -> list[str]:
    """``unshare -rn`` (a user namespace with no network) where the machine allows it."""
    if not shutil.which("unshare"):
        return []
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return ["unshare", "-rn"] if probe.returncode == 0 else []


def test_kernel_builds_and_runs_offline(tiny_root, tmp_path, capsys):
    run = ["--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path / 'runs'}", "run.workers=0",
           "train.epochs=1", "train.tuples_per_epoch=4", "train.batch_tuples=2", "train.val_landmarks=0",
           "train.eval_before=false", "infer.scales=[1,0.75]", "infer.flip=true"]
    assert main(["train", *run]) == 0
    out = tmp_path / "kaggle"
    assert main(["kernel", *run, "--out", str(out), "--user", "tester", "--no-download"]) == 0
    meta = json.loads((out / "kernel/kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["enable_gpu"] is True
    assert meta["competition_sources"] == ["landmark-retrieval-2021"]
    assert meta["dataset_sources"] == ["tester/landmark-retrieval-2021-remap-wheels",
                                       "tester/landmark-retrieval-2021-remap-model"]
    wheels = [p.name for p in (out / "wheels").glob("*.whl")]
    assert len(wheels) == 1 and wheels[0].startswith("remap_landmarks-") and not any("torch" in w for w in wheels)

    # A fake /kaggle/input: the competition (no index.csv/test.csv, as on Kaggle) and the two datasets.
    kaggle_input = tmp_path / "input"
    competition = kaggle_input / "landmark-retrieval-2021"
    competition.mkdir(parents=True)
    for split in ("index", "test"):
        shutil.copytree(tiny_root / "toy" / split, competition / split)
    shutil.copy(tiny_root / "toy/sample_submission.csv", competition)
    shutil.copytree(out / "wheels", kaggle_input / "landmark-retrieval-2021-remap-wheels")
    shutil.copytree(out / "model", kaggle_input / "landmark-retrieval-2021-remap-model")
    working = tmp_path / "working"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KAGGLE_INPUT_ROOT=str(kaggle_input), KAGGLE_WORKING_DIR=str(working),
               KERNEL_PIP_TARGET=str(tmp_path / "site"), KERNEL_TIME_LIMIT_S="1")  # forces both degradations
    result = subprocess.run([*_network_blocker(), sys.executable, str(out / "kernel/entry.py")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropping flip" in result.stderr and "dropping scales" in result.stderr
    assert "stage install" in result.stderr and "stage index" in result.stderr
    assert (tmp_path / "site/solution/kernel/run.py").is_file()  # installed from the wheel, not the repo
    test_ids, index_ids = read_ids(tiny_root / "toy/test.csv"), read_ids(tiny_root / "toy/index.csv")
    assert validate_submission(working / "submission.csv", test_ids, index_ids) == []


def test_kernel_refuses_csv_competitions(capsys):
    assert main(["kernel", "--competition", "toy"]) == 2
    assert "CSV upload" in capsys.readouterr().err
