"""train.positives=nearest picks the landmark image the current net finds most similar to the query, and
train.positive_view=whole shows the positive uncropped."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from solution.config import load_config
from solution.data.datasets import TupleDataset
from solution.train.tuples import TrainSet, draw_epoch, nearest_positives


def _unit(*rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_nearest_positive_by_hand():
    # query 0 (landmark A: images 0, 1, 2) points along x; image 2 is nearer to it than image 1
    described = dict(enumerate(_unit([1, 0, 0], [0, 1, 0], [1, 0.2, 0], [0, 0, 1], [1, 0.5, 0])))
    rng = np.random.default_rng(0)
    chosen = nearest_positives(np.stack([described[0], described[3]]), [np.array([1, 2]), np.array([4])],
                               described, k=1, rng=rng)
    assert chosen.tolist() == [2, 4]
    # with k=2 either of the two nearest may be drawn, never a third
    picks = {int(nearest_positives(described[0][None], [np.array([1, 2, 4])], described, 2, rng)[0])
             for _ in range(40)}
    assert picks == {2, 4}


def test_draw_epoch_takes_the_nearest_positive_and_keeps_the_negatives():
    # 3 landmarks x 3 images; each query's nearest same-landmark image is the next one round its landmark
    labels = np.repeat([0, 1, 2], 3)
    angles = np.array([0.0, 0.5, 0.2, 2.0, 2.6, 2.2, 4.0, 4.7, 4.3])
    table = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    train = TrainSet([str(i) for i in range(9)], [Path(f"{i}.jpg") for i in range(9)], labels)
    described = []

    def describe(indices):
        described.append(list(indices))
        return table[indices]

    cfg = {**load_config("toy")["train"], "tuples_per_epoch": 9, "pool_size": 9, "neg_num": 2}
    shapes = [(64, 48)] * 9
    nearest = draw_epoch(train, shapes, {**cfg, "positives": "nearest"}, seed=0, epoch=0, describe=describe)
    expected = {0: 2, 1: 2, 2: 0, 3: 5, 4: 5, 5: 3, 6: 8, 7: 8, 8: 6}  # by angle within each landmark
    assert {q: p for q, p, *_ in nearest.tuples} == expected
    assert sorted(described[-1]) == list(range(9))  # every candidate described once, with queries and pool
    random = draw_epoch(train, shapes, {**cfg, "positives": "random"}, seed=0, epoch=0, describe=describe)
    assert [t[2:] for t in random.tuples] == [t[2:] for t in nearest.tuples]  # the same hard negatives
    assert [t[0] for t in random.tuples] == [t[0] for t in nearest.tuples]


def test_a_whole_positive_is_the_image_uncropped(tmp_path):
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :8] = 255  # a white stripe at the left edge: a crop to half the area often loses it
    Image.fromarray(image).save(tmp_path / "a.png")
    cfg = {**load_config("toy")["train"], "jitter": 0.0, "blur_p": 0.0, "jpeg_p": 0.0, "crop_scale": [0.3, 0.5]}
    paths = [tmp_path / "a.png"] * 3
    whole = TupleDataset([paths] * 20, [(64, 48)] * 20, {**cfg, "positive_view": "whole"}, seed=1)
    cropped = TupleDataset([paths] * 20, [(64, 48)] * 20, cfg, seed=1)
    for i in range(20):
        positive = whole[i][0][1].float()
        assert torch.allclose(positive, torch.from_numpy(image).permute(2, 0, 1).float(), atol=1)  # exactly it
        assert torch.equal(whole[i][0][0], cropped[i][0][0])  # the query is cropped as before
    assert any(not torch.allclose(cropped[i][0][1].float(), positive, atol=1) for i in range(20))


def test_positive_k_beyond_a_landmark_is_warned(caplog):
    import logging

    labels = np.repeat([0, 1, 2], 3)  # each query has 2 other images of its landmark
    table = np.eye(9, 4, dtype=np.float32) + 0.1
    train = TrainSet([str(i) for i in range(9)], [Path(f"{i}.jpg") for i in range(9)], labels)
    cfg = {**load_config("toy")["train"], "tuples_per_epoch": 9, "pool_size": 9, "neg_num": 2,
           "positives": "nearest"}
    with caplog.at_level(logging.WARNING):
        draw_epoch(train, [(64, 48)] * 9, {**cfg, "positive_k": 2}, seed=0, epoch=0, describe=lambda i: table[i])
    assert "positive_k" not in caplog.text
    with caplog.at_level(logging.WARNING):
        draw_epoch(train, [(64, 48)] * 9, {**cfg, "positive_k": 5}, seed=0, epoch=0, describe=lambda i: table[i])
    assert "train.positive_k=5 is more than the other images of the landmark for 9 of 9 queries" in caplog.text
