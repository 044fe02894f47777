"""ArcFace, sub-center ArcFace and dynamic margins: logits against hand-computed cases, a gradient check, a
class head that learns, and training runs that keep it out of the net and resume it exactly."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from solution.cli import main
from solution.config import ConfigError, load_config
from solution.train.loss import (
    MarginClassifier,
    arcface_logits,
    dynamic_margins,
    subcenter_cosine,
)
from solution.train.tuples import TrainSet, draw_epoch


def test_margin_goes_to_the_target_angle_only():
    # cosines 0.6 (target, class 1) and 0.8: theta = acos(0.6); cos(theta + 0.5) by hand
    cosine = torch.tensor([[0.8, 0.6, -0.2]], dtype=torch.float64)
    labels = torch.tensor([1])
    logits = arcface_logits(cosine, labels, 0.5, scale=10.0)
    expected_target = 0.6 * math.cos(0.5) - 0.8 * math.sin(0.5)  # sin(theta) = 0.8
    assert logits[0, 1].item() == pytest.approx(10 * expected_target, abs=1e-9)
    assert logits[0, 0].item() == pytest.approx(8.0) and logits[0, 2].item() == pytest.approx(-2.0)


def test_past_pi_minus_m_the_target_logit_keeps_falling():
    # theta close to pi: cos(theta + m) would rise again; the rule gives cos(theta) - m sin(m) instead
    cosine = torch.tensor([[-0.99, 0.1]], dtype=torch.float64)
    m = 0.5
    logit = arcface_logits(cosine, torch.tensor([0]), m, scale=1.0)[0, 0].item()
    assert logit == pytest.approx(-0.99 - m * math.sin(m))
    assert logit < -0.99


def test_per_class_margins_are_read_by_each_rows_label():
    cosine = torch.tensor([[0.6, 0.0], [0.0, 0.6]], dtype=torch.float64)
    margins = torch.tensor([0.1, 0.4], dtype=torch.float64)
    logits = arcface_logits(cosine, torch.tensor([0, 1]), margins, scale=1.0)
    assert logits[0, 0].item() == pytest.approx(math.cos(math.acos(0.6) + 0.1))
    assert logits[1, 1].item() == pytest.approx(math.cos(math.acos(0.6) + 0.4))
    assert logits[0, 1].item() == 0.0 and logits[1, 0].item() == 0.0


def test_dynamic_margins_by_class_frequency():
    # n^-1/4 of 1, 16, 81 = 1, 1/2, 1/3; scaled to [0, 1]: 1, 1/4, 0
    margins = dynamic_margins(np.array([1, 16, 81]), a=0.45, b=0.05)
    assert margins == pytest.approx([0.05 + 0.45, 0.05 + 0.45 / 4, 0.05])
    assert dynamic_margins(np.array([5, 5]), a=0.45, b=0.05) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="positive image count"):
        dynamic_margins(np.array([3, 0]), 0.45, 0.05)


def test_subcenter_cosine_takes_each_class_nearest_centre():
    embeddings = torch.tensor([[1.0, 0.0, 0.0]])
    centres = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0],   # class 0: cos 0 and 1/sqrt2
                            [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])  # class 1: cos 0 and -1
    cosine = subcenter_cosine(embeddings, centres, subcenters=2)
    assert cosine.shape == (1, 2)
    assert cosine[0, 0].item() == pytest.approx(1 / math.sqrt(2)) and cosine[0, 1].item() == pytest.approx(0.0)


def test_gradient_check():
    torch.manual_seed(0)
    embeddings = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    centres = torch.randn(4 * 3, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 1])
    margins = torch.tensor([0.1, 0.2, 0.3, 0.5], dtype=torch.float64)

    def loss(e, c):
        return F.cross_entropy(arcface_logits(subcenter_cosine(e, c, 3), labels, margins, 16.0), labels)

    assert torch.autograd.gradcheck(loss, (embeddings, centres))


def test_the_class_head_learns_separable_classes():
    torch.manual_seed(0)
    points = F.normalize(torch.randn(8, 16), dim=1)
    labels = torch.arange(8).repeat_interleave(4)
    data = F.normalize(points[labels] + 0.3 * torch.randn(32, 16), dim=1)
    head = MarginClassifier(16, 8, subcenters=3, scale=30.0, margins=dynamic_margins(np.arange(1, 9), 0.45, 0.05))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = head(data, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_imprinting_puts_each_class_centre_at_its_mean():
    head = MarginClassifier(3, 2, subcenters=2)
    descriptors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    head.imprint(descriptors, torch.tensor([0, 0, 1]))
    centres = F.normalize(head.centres, dim=1)
    assert torch.allclose(centres[0], torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2), atol=1e-6)
    assert torch.allclose(centres[2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert not torch.equal(centres[0], centres[1])  # the second sub-centre starts near, not on, the first
    assert (centres[0] @ centres[1]).item() > 0.95


def test_arcface_alone_mines_nothing():
    train = TrainSet([str(i) for i in range(12)], [None] * 12, np.repeat(np.arange(4), 3))
    cfg = {"tuples_per_epoch": 4, "pool_size": 12, "neg_num": 2, "negatives": "hard", "positives": "random",
           "positive_k": 1, "loss": "arcface"}

    def describe(_):
        raise AssertionError("ArcFace alone must not describe anything to mine")

    plan = draw_epoch(train, [(64, 64)] * 12, cfg, seed=0, epoch=0, describe=describe)
    assert len(plan.tuples) == 4 and "mine_s" not in plan.stats
    with pytest.raises(AssertionError, match="must not describe"):
        draw_epoch(train, [(64, 64)] * 12, {**cfg, "loss": "arcface+triplet"}, seed=0, epoch=0, describe=describe)


def test_loss_keys_are_checked():
    with pytest.raises(ConfigError, match="train.loss"):
        load_config("toy-tiny", ["train.loss=cosface"])
    with pytest.raises(ConfigError, match="train.arcface.margin"):
        load_config("toy-tiny", ["train.arcface.margin=2"])
    with pytest.raises(ConfigError, match="train.size_schedule"):
        load_config("toy-tiny", ["train.size_schedule=[[3, 128], [2, 96]]"])


def _args(root, run_dir, epochs):
    return ["train", "--config", "toy-tiny", f"data.root={root}", f"run.dir={run_dir}", "run.workers=0",
            "model.pretrained=none", f"train.epochs={epochs}", "train.tuples_per_epoch=12", "train.val_landmarks=0",
            "train.eval_before=false", "train.loss=arcface+triplet", "train.arcface.subcenters=3",
            "train.arcface.dynamic=true", "train.select=last", "train.size_schedule=[[2, 128]]"]


def test_arcface_run_keeps_the_head_out_of_the_net_and_resumes_exactly(tiny_root, tmp_path):
    assert main(_args(tiny_root, tmp_path / "straight", 2)) == 0
    straight = torch.load(tmp_path / "straight/toy-tiny/checkpoint.pt", weights_only=True)
    assert "classifier" in straight and not any("centres" in k for k in straight["state_dict"])
    classes = straight["classifier"]["margins"].shape[0]
    assert straight["classifier"]["centres"].shape == (classes * 3, straight["meta"]["dim"])
    rows = list(csv.DictReader(open(tmp_path / "straight/toy-tiny/metrics.csv")))
    assert [int(r["size"]) for r in rows] == [96, 128] and all(float(r["arcface"]) > 0 for r in rows)

    assert main(_args(tiny_root, tmp_path / "resumed", 1)) == 0
    assert main(_args(tiny_root, tmp_path / "resumed", 2)) == 0  # train.epochs grows: the run continues
    resumed = torch.load(tmp_path / "resumed/toy-tiny/checkpoint.pt", weights_only=True)
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert torch.equal(straight["classifier"]["centres"], resumed["classifier"]["centres"])
