"""`make kernel` takes the inference settings from the recipe named by CONFIG, else from the checkpoint's own
saved config, and never the toy's by default: a ResNeXt trained at 1024 px must not be scored at 192 px.
Building the folders builds this project's wheel in an isolated environment (setuptools from the package
index): marked ``network``."""

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from solution.cli import build_parser, main
from solution.config import load_config
from solution.model.net import build_net, save_checkpoint

pytestmark = pytest.mark.network
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gldv2_checkpoint(tmp_path_factory):
    """A checkpoint whose saved config says it was trained on GLDv2 (the 2019 competition) at 1024 px."""
    cfg = load_config("toy-tiny", ["model.pretrained=none", "competition=landmark-retrieval-2019",
                                   "infer.image_size=1024", "infer.qe.enabled=true", "infer.qe.n=7"])
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, build_net(cfg["model"]), config=cfg)
    return path


def _kernel(tmp_path, checkpoint, *args):
    out = tmp_path / "kaggle"
    code = main(["kernel", "--checkpoint", str(checkpoint), "--out", str(out), "--no-download", "--user", "t", *args])
    marker = out / "model" / "remap-model.json"
    return code, (json.loads(marker.read_text()) if marker.is_file() else None)


def test_the_toy_settings_on_a_gldv2_checkpoint_are_refused_in_one_line(gldv2_checkpoint, tmp_path, capsys):
    code, marker = _kernel(tmp_path, gldv2_checkpoint, "--config", "toy")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and marker is None and not (tmp_path / "kaggle").exists()
    assert len(err) == 1 and err[0].startswith("error:") and "trained on 'landmark-retrieval-2019'" in err[0]
    assert "CONFIG=kernel-2021" in err[0]


def test_a_recipe_for_the_kernel_sets_every_inference_setting(gldv2_checkpoint, tmp_path, capsys):
    code, marker = _kernel(tmp_path, gldv2_checkpoint, "--config", "kernel-2021")
    assert code == 0, capsys.readouterr().err
    recipe = load_config("kernel-2021")["infer"]
    assert marker["infer"] == recipe and marker["infer"]["image_size"] == 512
    assert marker["infer"]["index"]["dtype"] == "float16" and marker["infer_source"] == "config kernel-2021"
    assert "inference settings from config kernel-2021: image_size=512" in capsys.readouterr().out


def test_without_config_the_checkpoint_keeps_its_own_settings(gldv2_checkpoint, tmp_path, capsys):
    code, marker = _kernel(tmp_path, gldv2_checkpoint)
    assert code == 0, capsys.readouterr().err
    assert marker["infer"]["image_size"] == 1024 and marker["infer"]["qe"] == {"enabled": True, "alpha": 3.0, "n": 7}
    assert marker["infer_source"].startswith("the checkpoint's own config")
    assert "image_size=1024" in capsys.readouterr().out


def _make_kernel_args(*variables):
    out = subprocess.run(["make", "-n", "-C", str(REPO), "kernel", "VENV=", "PYTHON=python", *variables],
                         capture_output=True, text=True, check=True).stdout
    line = next(row for row in out.replace("\\\n", " ").splitlines() if "solution kernel" in row)
    return build_parser().parse_args(shlex.split(line)[3:])


def test_the_makefile_passes_config_only_when_it_is_given_or_no_checkpoint_is():
    assert _make_kernel_args("CHECKPOINT=runs/x/checkpoint.pt").config is None  # the checkpoint's own settings
    given = _make_kernel_args("CHECKPOINT=runs/x/checkpoint.pt", "CONFIG=kernel-2021")
    assert given.config == "kernel-2021" and given.python_version == ["3.11", "3.12", "3.13"]
    assert _make_kernel_args().config == "toy"  # neither: the toy run's checkpoint and settings
