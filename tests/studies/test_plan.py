"""`python -m solution plan`: every shipped recipe fits the GPU its hardware section names, with the
allowance, and makes enough optimiser steps to fine-tune; measured on fake tensors (no GPU, no data)."""

import pytest
import torch
from torch import nn

from solution.cli import main
from solution.config import ConfigError, load_config, resolve_config_path
from solution.studies.plan import GPUS, OVERHEAD_GB, flop_counter, measure_train_step, plan_recipe

RECIPES = ["gldv2-resnet101-remap", "gldv2-efficientnet-remap", "gldv2-efficientnet-arcface"]
MIN_STEPS = 10_000  # Adam at 1e-6 moves a weight about lr a step: cirtorch's defaults make about 40,000


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_fits_its_named_gpu_and_makes_enough_steps(name):
    cfg = load_config(name)
    gpu, gpus = cfg["hardware"]["gpu"], cfg["hardware"]["gpus"]
    assert gpu in GPUS and gpus > 1
    plan = plan_recipe(cfg, gpu, gpus)
    usable = GPUS[gpu].usable_gib
    assert plan.train_peak_gb + OVERHEAD_GB <= usable * 0.95, plan.train  # a margin on top of the allowance
    assert plan.extract.peak_gb + OVERHEAD_GB <= usable * 0.95, plan.extract
    assert plan.ddp_gb > 0 and plan.train_peak_gb > plan.train.peak_gb  # several GPUs: DDP's buckets counted
    assert plan.validated_per_epoch > 0 and 0 < plan.scoring_hours < plan.train_hours
    assert plan.steps >= MIN_STEPS and plan.train.tflop > 1
    assert plan.train_hours > 0 and plan.extract_gpu_hours > 0


def test_the_old_per_rank_batch_would_not_fit():
    """What the recipe used to ask (8 tuples = 56 images at 1024 px per GPU): out of memory on any card."""
    cfg = load_config("gldv2-resnet101-remap", ["train.tuples_per_forward=8"])
    peak = measure_train_step(cfg, GPUS["v100"].dtype).peak_gb
    assert peak + OVERHEAD_GB > max(card.usable_gib for card in GPUS.values())


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
    """A steady step holds the centres, their gradient and Adam's two moments (4 copies of classes x
    sub-centres x D floats) and, at its backward peak, the normalised centres, their gradient and the
    division's gradient on top: between 4 and 9 copies over the triplet's step. ArcFace alone describes
    nothing to mine."""
    base = ["model.pretrained=none", "model.whiten_dim=64"]
    triplet = measure_train_step(load_config("toy-tiny", base), GPUS["h100"].dtype)
    arcface_cfg = load_config("toy-tiny", [*base, "train.loss=arcface+triplet", "train.arcface.subcenters=3"])
    arcface = measure_train_step(arcface_cfg, GPUS["h100"].dtype, classes=20_000)
    one_copy_gb = 20_000 * 3 * 64 * 4 / 2**30
    assert 4 * one_copy_gb * 0.95 <= arcface.peak_gb - triplet.peak_gb <= 9 * one_copy_gb
    alone = plan_recipe(load_config("toy-tiny", [*base, "train.loss=arcface"]), "h100", 1,
                        {16: (arcface, triplet)})
    assert alone.described_per_epoch == 0


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_grouped_convolution_flops_against_hand_arithmetic(groups):
    """Forward, input gradient and weight gradient each cost 2 N C_out (C_in / groups) k^2 H W; torch's own
    counter charges the weight gradient as if groups were 1 (issue 28: EfficientNet's depthwise convs)."""
    n, c_in, c_out, k, hw = 2, 8, 16, 3, 10
    conv = nn.Conv2d(c_in, c_out, k, padding=1, groups=groups, bias=False)
    x = torch.randn(n, c_in, hw, hw, requires_grad=True)
    counter = flop_counter()
    with counter:
        conv(x).sum().backward()
    one_pass = 2 * n * c_out * (c_in // groups) * k * k * hw * hw
    assert counter.get_total_flops() == 3 * one_pass


def test_depthwise_weight_gradient_alone():
    """No input gradient asked (a first layer): forward plus the weight gradient only."""
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    counter = flop_counter()
    with counter:
        conv(torch.randn(1, 32, 8, 8)).sum().backward()
    assert counter.get_total_flops() == 2 * 2 * 32 * 1 * 9 * 64


def test_adams_moments_are_held_through_the_measured_step():
    """The measured step is a steady-state one: its peak holds Adam's two moments (2 x 4 bytes a weight)
    on top of what a first step's backward peaks at."""
    cfg = load_config("toy-tiny", ["model.pretrained=none", "model.whiten_dim=64"])
    from solution.model import build_net
    weights_gb = sum(p.numel() for p in build_net({**cfg["model"], "pretrained": "none"}).parameters()) * 4 / 2**30
    steady = measure_train_step(cfg, GPUS["t4"].dtype).peak_gb
    first = measure_train_step(cfg, GPUS["t4"].dtype, steady=False).peak_gb
    assert 1.8 * weights_gb <= steady - first <= 2.2 * weights_gb, (steady, first, weights_gb)


def test_more_gpus_than_tuples_per_step_is_refused():
    cfg = load_config("toy-tiny", ["model.pretrained=none", "train.tuples_per_step=4"])
    with pytest.raises(ConfigError, match="tuples_per_step=4"):
        plan_recipe(cfg, "t4", 8, {16: (None, None)})


def test_a_forward_larger_than_a_gpus_share_is_measured_at_the_share(monkeypatch):
    """#29: plan measured tuples_per_forward=8 on a 4-tuple step; training never forwards more than a GPU's share."""
    from solution.studies import plan as budget

    seen = []
    fake = budget.Measured(1.0, 1.0)

    def record(cfg, dtype, **kwargs):
        seen.append(cfg["train"]["tuples_per_forward"])
        return fake

    monkeypatch.setattr(budget, "measure_train_step", record)
    monkeypatch.setattr(budget, "measure_extract_batch", lambda cfg, dtype, one_scale=False: fake)
    monkeypatch.setattr(budget, "ddp_bucket_gb", lambda cfg: 0.0)
    cfg = load_config("toy-tiny", ["model.pretrained=none", "train.tuples_per_step=4", "train.tuples_per_forward=8"])
    plan = plan_recipe(cfg, "t4", 2)
    assert seen == [2] and plan.forwards_per_step == 2  # two GPUs of two tuples: one forward each
