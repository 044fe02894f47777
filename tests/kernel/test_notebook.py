"""A simulated Kaggle notebook, as unkind as the real one (``solution.kernel.simulate``, which
``python -m solution kernel-dryrun`` also uses):

- The kernel folder's entry.py runs in a fresh virtual environment that sees the host's packages (torch,
  numpy, ... as Kaggle's image has them) through a view that leaves out faiss and this package entirely
  (modules and distributions), so pip must install both from the wheels dataset; a ``sitecustomize`` also
  refuses to import either from anywhere else. The kernel logs where it imported them from, and the tests
  check that from inside entry.py's own process.
- The network is cut (``unshare -rn``), so pip can only use the wheels dataset.
- Data is mounted in Kaggle's old layout (/kaggle/input/<slug>/) and its current one (competitions/<slug>/,
  datasets/<owner>/<slug>/); the competition folder has no index.csv or test.csv, as on Kaggle.

Building the wheels dataset downloads the real faiss-cpu wheel (and its dependencies) from the package index:
these tests are marked ``network`` and run in ``make test``.
"""

import json
import subprocess
import sys

import pytest

from solution.cli import main
from solution.data.gldv2 import read_ids
from solution.infer.submission import submission_rankings, validate_submission
from solution.kernel.build import KAGGLE_PYTHON, KAGGLE_PYTHONS
from solution.kernel.contract import WHEELS_MANIFEST, python_tag
from solution.kernel.simulate import mount, notebook_python, run_entry
from solution.metrics import score_submission

pytestmark = pytest.mark.network

HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _tiny_run(tiny_root, tmp):
    return ["--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp / 'runs'}", "run.workers=0",
            "train.epochs=1", "train.tuples_per_epoch=4", "train.tuples_per_step=2", "train.val_landmarks=0",
            "train.eval_before=false", "infer.scales=[1,0.75]", "infer.flip=true"]


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    """A trained tiny checkpoint and `make kernel`'s folders for it: CPU faiss for this machine's Python
    (Kaggle's is the default; here the simulated notebook must install them), with train descriptors."""
    tmp = tmp_path_factory.mktemp("kernel")
    run = _tiny_run(tiny_root, tmp)
    assert main(["train", *run]) == 0
    out = tmp / "kaggle"
    assert main(["kernel", *run, "--out", str(out), "--user", "tester", "--faiss", "cpu",
                 "--python-version", HOST_PYTHON, "--train-features"]) == 0
    return {"run": run, "out": out, "tmp": tmp}


@pytest.fixture(scope="module")
def notebook(built):
    """A Python environment like Kaggle's: the host's packages visible, faiss and this package not."""
    python, env, site = notebook_python(built["tmp"] / "notebook")
    hidden = subprocess.run([str(python), "-c", "import faiss"], env=env, capture_output=True, text=True,
                            check=False)
    assert hidden.returncode != 0 and "hidden" in hidden.stderr  # the host's faiss is out of reach
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True,
                            text=True, check=True).stdout.lower()
    assert "numpy==" in listed and "faiss" not in listed and "remap" not in listed  # pip sees no faiss at all
    return {"python": python, "env": env, "site": site}


def _mount(built, tiny_root, root, layout, train_features=False):
    names = ("wheels", "model", "train-features") if train_features else ("wheels", "model")
    return mount(built["out"], tiny_root / "toy", root, layout, datasets=names, owner="tester")


def _run_entry(built, notebook, input_root, working, **settings):
    return run_entry(notebook["python"], notebook["env"], built["out"] / "kernel" / "entry.py", input_root, working,
                     {k: str(v) for k, v in settings.items()}, timeout=900)


def _score(tiny_root, submission):
    from solution.data.gldv2 import read_solution

    solution = read_solution(tiny_root / "toy" / "retrieval_solution_v2.1.csv")
    return score_submission(submission_rankings(submission), solution, 100)


def test_kernel_folders(built):
    meta = json.loads((built["out"] / "kernel/kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["enable_gpu"] is True
    assert meta["machine_shape"] == "NvidiaTeslaT4"  # named: without it kaggle's server picks the card
    assert meta["competition_sources"] == ["landmark-retrieval-2021"]
    assert meta["dataset_sources"] == [f"tester/landmark-retrieval-2021-remap-{name}"
                                       for name in ("wheels", "model", "train-features")]
    manifest = json.loads((built["out"] / "wheels" / WHEELS_MANIFEST).read_text())
    assert manifest["package"].startswith("remap_landmarks-")
    assert manifest["faiss"]["cpu"]["wheels"][python_tag()].startswith("faiss_cpu-")
    assert set(manifest["files"]) == {p.name for p in (built["out"] / "wheels").glob("*.whl")}
    assert not any(name.startswith("torch") for name in manifest["files"])
    assert KAGGLE_PYTHON == "3.12" and KAGGLE_PYTHONS == ("3.11", "3.12", "3.13")  # the README states these
    import torch

    from solution.kernel.contract import MODEL_MARKER, sha256

    shipped = torch.load(built["out"] / "model/checkpoint.pt", weights_only=True)
    assert set(shipped) == {"meta", "state_dict"}  # the net alone: no optimiser state, no class centres
    marker = json.loads((built["out"] / "model" / MODEL_MARKER).read_text())
    assert marker["shipped_sha256"] == sha256(built["out"] / "model/checkpoint.pt") != marker["checkpoint_sha256"]


def test_public_run_in_the_current_layout(built, notebook, tiny_root, tmp_path):
    root = _mount(built, tiny_root, tmp_path / "input", "new")
    result = _run_entry(built, notebook, root, tmp_path / "working")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "installed remap_landmarks-" in result.stderr and "cpu faiss" in result.stderr
    # from inside entry.py's process: both modules came from what pip installed into the notebook
    assert f"imported faiss from {notebook['site']}/faiss/" in result.stderr
    assert f"solution from {notebook['site']}/solution/" in result.stderr
    # the public run rehearses the hidden run's code: the probe, the plan for its counts, the timed search slice
    assert "public run" in result.stderr and "probe:" in result.stderr and "plan:" in result.stderr
    assert "search priced at" in result.stderr and "the hidden run would use" in result.stderr
    assert "inference settings from config toy-tiny" in result.stderr
    # the hidden run's memory, stage by stage at its counts, projected for two T4s on this CPU
    rehearsal = [line for line in result.stderr.splitlines() if "memory rehearsal" in line]
    assert len(rehearsal) >= 1 and all("761757" in line and "projected" in line for line in rehearsal)
    assert result.stderr.index("memory rehearsal") < result.stderr.index("probe:")
    assert "writing/validation/spill" in result.stderr and "reserve" in result.stderr
    test_ids, index_ids = read_ids(tiny_root / "toy/test.csv"), read_ids(tiny_root / "toy/index.csv")
    assert validate_submission(tmp_path / "working/submission.csv", test_ids, index_ids) == []
    installed = subprocess.run([str(notebook["python"]), "-c", "import solution, faiss; print(solution.__file__, "
                                "faiss.__file__)"], env=notebook["env"], capture_output=True, text=True, check=True)
    assert installed.stdout.count(notebook["site"]) == 2  # both came from the wheels dataset


def test_full_run_in_the_old_layout_scores_as_submit(built, notebook, tiny_root, tmp_path, capsys):
    root = _mount(built, tiny_root, tmp_path / "input", "old", train_features=True)
    result = _run_entry(built, notebook, root, tmp_path / "working", KERNEL_FULL=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plan:" in result.stderr and "(fits)" in result.stderr and "dropping" not in result.stderr
    assert "stage extract" in result.stderr and "stage search" in result.stderr
    assert "label re-ranking with" in result.stderr
    kernel_scores = _score(tiny_root, tmp_path / "working/submission.csv")
    # The same checkpoint and TTA through `submit`, with label re-ranking on train(-clean) as in the kernel.
    assert main(["submit", *built["run"], "infer.label_rerank.enabled=true", "--out", str(tmp_path / "sub")]) == 0
    submit_scores = _score(tiny_root, next((tmp_path / "sub").glob("*.csv")))
    assert abs(kernel_scores["all"] - submit_scores["all"]) <= 0.01, (kernel_scores, submit_scores)


def test_full_run_degrades_only_past_the_limit(built, notebook, tiny_root, tmp_path):
    root = _mount(built, tiny_root, tmp_path / "input", "old")
    result = _run_entry(built, notebook, root, tmp_path / "working", KERNEL_FULL=1, KERNEL_TIME_LIMIT_S=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropping flip" in result.stderr and "dropping a scale" in result.stderr
    assert "no plan fits: even the cheapest is projected past the limit" in result.stderr
    assert result.stderr.index("no plan fits") < result.stderr.index("stage extract")
    assert "label re-ranking" not in result.stderr  # no train descriptors attached
    assert (tmp_path / "working/submission.csv").is_file()


def test_wheels_without_faiss_stop_at_once_in_one_line(built, notebook, tiny_root, tmp_path):
    root = _mount(built, tiny_root, tmp_path / "input", "new")
    wheels = root / "datasets" / "tester" / "landmark-retrieval-2021-remap-wheels"
    manifest = json.loads((wheels / WHEELS_MANIFEST).read_text())
    for spec in manifest.pop("faiss").values():
        for wheel in set(spec["wheels"].values()):
            (wheels / wheel).unlink()
            manifest["files"].remove(wheel)
    (wheels / WHEELS_MANIFEST).write_text(json.dumps(manifest))
    result = _run_entry(built, notebook, root, tmp_path / "working")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "no faiss wheel" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "working/submission.csv").exists()


def test_dryrun_pads_the_test_set_and_validates(built, tiny_root, tmp_path, capsys):
    work = tmp_path / "dry"
    assert main(["kernel-dryrun", *built["run"], "--kaggle", str(built["out"]), "--layout", "old",
                 "--test-images", "40", "--work", str(work)]) == 0
    out = capsys.readouterr().out
    assert "old layout, 40 test images" in out and "submission.csv: valid" in out
    assert len((work / "working/submission.csv").read_text().splitlines()) == 41


def test_kernel_refuses_csv_competitions(capsys):
    assert main(["kernel", "--competition", "toy"]) == 2
    assert "CSV upload" in capsys.readouterr().err


def test_an_ensemble_kernel_scores_as_the_ensemble_command(built, notebook, tiny_root, tmp_path, capsys):
    """Two checkpoints plus the ensemble's whitening in one model dataset; the kernel recomputes the
    ensemble descriptor and must rank as `ensemble` did. A member that is not the packed file stops it."""
    import shutil

    from solution.config import load_config
    from solution.model.net import build_net, save_checkpoint

    runs = built["tmp"] / "runs"
    second = load_config("toy-tiny", ["model.pretrained=none", "model.head=gem", "model.layers=[-1]",
                                      "model.whiten_dim=0"])
    save_checkpoint(runs / "gem-b" / "checkpoint.pt", build_net(second["model"]))
    common = [*built["run"], "run.name=ens",
              "ensemble.members=[{run: toy-tiny, weight: 1.0}, {run: gem-b, weight: 0.5}]",
              "ensemble.whiten_on=index", "ensemble.whiten_dim=16"]
    assert main(["ensemble", *common, "--out", str(tmp_path / "subs")]) == 0
    ensemble_scores = _score(tiny_root, tmp_path / "subs" / "toy-ens.csv")
    out = tmp_path / "kaggle"
    assert main(["kernel", *common, "--out", str(out), "--user", "tester", "--no-download",
                 "--python-version", HOST_PYTHON]) == 0
    marker = json.loads((out / "model" / "remap-model.json").read_text())
    assert [m["run"] for m in marker["ensemble"]["members"]] == ["toy-tiny", "gem-b"]
    assert (out / "model" / "whitening.npz").is_file() and len(list((out / "model" / "members").iterdir())) == 1
    shutil.rmtree(out / "wheels")
    shutil.copytree(built["out"] / "wheels", out / "wheels")  # the faiss wheels the first build downloaded
    root = mount(out, tiny_root / "toy", tmp_path / "input", "new", datasets=("wheels", "model"), owner="tester")
    result = run_entry(notebook["python"], notebook["env"], out / "kernel" / "entry.py", root, tmp_path / "working",
                       {"KERNEL_FULL": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ensemble of 2 members (toy-tiny, gem-b)" in result.stderr and "whitened to 16-D" in result.stderr
    kernel_scores = _score(tiny_root, tmp_path / "working/submission.csv")
    assert abs(kernel_scores["all"] - ensemble_scores["all"]) <= 0.01, (kernel_scores, ensemble_scores)
    member = next((root / "datasets" / "tester").glob("*-model")) / "members"
    next(member.iterdir()).write_bytes(b"not the packed checkpoint")
    result = run_entry(notebook["python"], notebook["env"], out / "kernel" / "entry.py", root, tmp_path / "again",
                       {"KERNEL_FULL": "1"}, timeout=900)
    assert result.returncode != 0 and "ensemble member gem-b" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_ensemble_config_refuses_single_checkpoint_train_features(built, capsys):
    common = [*built["run"], "run.name=ens", "ensemble.members=[{run: toy-tiny, weight: 1.0}]"]
    assert main(["kernel", *common, "--train-features", "--no-download"]) == 2
    assert "an ensemble kernel has no label re-ranking" in capsys.readouterr().err
