"""`python -m solution plan`: every shipped recipe fits the GPU its hardware section names, with the
allowance, and makes enough optimiser steps to fine-tune; measured on fake tensors (no GPU, no data)."""

import pytest

from solution.cli import main
from solution.config import load_config, resolve_config_path
from solution.train.budget import GPUS, OVERHEAD_GB, measure_train_step, plan_recipe

RECIPES = ["gldv2-resnet101-remap", "gldv2-efficientnet-remap", "gldv2-efficientnet-arcface"]
MIN_STEPS = 10_000  # Adam at 1e-6 moves a weight about lr a step: cirtorch's defaults make about 40,000


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_fits_its_named_gpu_and_makes_enough_steps(name):
    cfg = load_config(name)
    gpu, gpus = cfg["hardware"]["gpu"], cfg["hardware"]["gpus"]
    assert gpu in GPUS and gpus > 1
    plan = plan_recipe(cfg, gpu, gpus)
    assert plan.train.peak_gb + OVERHEAD_GB <= GPUS[gpu][0] * 0.95, plan.train  # a margin on top of the allowance
    assert plan.extract.peak_gb + OVERHEAD_GB <= GPUS[gpu][0] * 0.95, plan.extract
    assert plan.steps >= MIN_STEPS and plan.train.tflop > 1
    assert plan.train_hours > 0 and plan.extract_gpu_hours > 0


def test_the_old_per_rank_batch_would_not_fit():
    """What the recipe used to ask (8 tuples = 56 images at 1024 px per GPU): out of memory on any card."""
    cfg = load_config("gldv2-resnet101-remap", ["train.tuples_per_forward=8"])
    peak = measure_train_step(cfg, GPUS["v100"][1]).peak_gb
    assert peak + OVERHEAD_GB > max(memory for memory, _, _ in GPUS.values())


def test_every_shipped_recipe_names_a_gpu_when_it_trains_on_gpus():
    folder = resolve_config_path("toy").parent
    for path in folder.glob("gldv2-*.yaml"):
        assert load_config(path.stem)["hardware"]["gpu"] is not None, path


def test_the_plan_command_prints_a_row_per_gpu(capsys):
    assert main(["plan", "--config", "toy-tiny", "model.pretrained=none"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| toy-tiny")]
    assert len(rows) == 4 and all(f"x {gpu} (" in row for gpu, row in zip(GPUS, rows))


def test_the_arcface_class_head_is_counted_in_the_step():
    """Centres, their gradient and Adam's two moments: 4 x classes x sub-centres x D floats over the triplet's
    step, and ArcFace alone describes nothing to mine."""
    base = ["model.pretrained=none", "model.whiten_dim=64"]
    triplet = measure_train_step(load_config("toy-tiny", base), GPUS["h100"][1])
    arcface_cfg = load_config("toy-tiny", [*base, "train.loss=arcface+triplet", "train.arcface.subcenters=3"])
    arcface = measure_train_step(arcface_cfg, GPUS["h100"][1], classes=20_000)
    centres_gb = 4 * 20_000 * 3 * 64 * 4 / 2**30
    assert centres_gb * 0.9 <= arcface.peak_gb - triplet.peak_gb <= centres_gb * 1.5
    alone = plan_recipe(load_config("toy-tiny", [*base, "train.loss=arcface"]), "h100", 1,
                        {16: (arcface, triplet)})
    assert alone.described_per_epoch == 0
