import numpy as np
import torch
from PIL import Image

from solution.config import load_config
from solution.data.datasets import (
    EvalDataset,
    TupleDataset,
    bucket_batches,
    collate_tuples,
    target_size,
    train_augmentation,
)


def test_target_size_keeps_aspect_in_buckets():
    assert target_size(400, 300, 160) == (160, 128)  # 120 rounds to 128
    assert target_size(300, 400, 160) == (128, 160)
    assert target_size(10, 1000, 160) == (32, 160)   # never below one multiple


def test_buckets_share_one_size():
    sizes = [(160, 128), (128, 160), (160, 128), (160, 160)]
    batches = bucket_batches(sizes, 2)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    for batch in batches:
        assert len({sizes[i] for i in batch}) == 1


def test_eval_dataset_bad_image_is_zero_and_flagged(tmp_path):
    Image.new("RGB", (80, 60), (255, 0, 0)).save(tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    data = EvalDataset([tmp_path / "ok.jpg", tmp_path / "bad.jpg"], 64)
    image, _, ok = data[0]
    assert ok and image.shape == (3, 64, 64) and image.dtype == torch.uint8 and image[0].float().mean() > 230
    image, _, ok = data[1]
    assert not ok and image.abs().sum() == 0


def test_tuples_are_reproducible_per_item(tmp_path):
    for i in range(3):
        Image.new("RGB", (90, 70), (40 * i, 100, 200)).save(tmp_path / f"{i}.jpg")
    tuples = [[tmp_path / f"{i}.jpg" for i in range(3)]] * 2
    cfg = load_config("toy")["train"]
    data = TupleDataset(tuples, [(64, 48), (64, 48)], cfg, seed=5)
    first, bad = data[1]
    data[0]
    assert first.shape == (3, 3, 48, 64) and bad == [] and torch.equal(first, data[1][0])
    assert not torch.equal(first, TupleDataset(tuples, [(64, 48)] * 2, cfg, seed=6)[1][0])
    assert train_augmentation(cfg, (32, 64))(image=np.zeros((70, 90, 3), np.uint8))["image"].shape == (64, 32, 3)


def test_unreadable_tuple_images_are_zeros_and_counted(tmp_path):
    Image.new("RGB", (90, 70), (200, 100, 50)).save(tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    data = TupleDataset([[tmp_path / "ok.jpg", tmp_path / "bad.jpg", tmp_path / "bad.jpg"]], [(64, 48)],
                        load_config("toy")["train"])
    images, bad = collate_tuples([data[0], data[0]])
    assert len(bad) == 4 and set(bad) == {str(tmp_path / "bad.jpg")} and images.shape == (2, 3, 3, 48, 64)
    assert images[:, 1:].sum() == 0 and images[:, 0].float().sum() > 0


def test_an_exif_rotated_photo_is_described_upright(tmp_path):
    """Stored 80 wide x 128 high with orientation 6 (rotate 90): upright it is a 128 x 80 landscape."""
    stored = Image.new("RGB", (80, 128), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 80, 20))  # a red band along the stored top edge
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(tmp_path / "rotated.jpg").size == (80, 128)  # the header still says portrait
    from solution.data.datasets import header_size

    assert header_size(tmp_path / "rotated.jpg") == (128, 80)
    image, _, ok = EvalDataset([tmp_path / "rotated.jpg"], 96)[0]
    assert ok and image.shape == (3, 64, 96)  # landscape, aspect kept: 96 x 60 -> 96 x 64
    right = image[:, :, -10:].float() / 255  # orientation 6 turns the stored top edge to the right side
    assert right[0].mean() > 0.8 and right[2].mean() < 0.3


def test_a_decompression_bomb_is_skipped_not_fatal(tmp_path):
    Image.new("1", (20000, 10000)).save(tmp_path / "bomb.png")  # 200 MP: PIL refuses it outright
    Image.new("RGB", (80, 60), (255, 0, 0)).save(tmp_path / "ok.jpg")
    data = EvalDataset([tmp_path / "bomb.png", tmp_path / "ok.jpg"], 64)
    assert not data[0][2] and data[1][2]


def test_header_sizes_in_threads_match_one_by_one(tmp_path):
    from solution.data.datasets import header_size, header_sizes

    paths = []
    for i in range(80):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (40 + i, 30 + (i * 7) % 50)).save(path)
        paths.append(path)
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    paths.append(tmp_path / "bad.jpg")
    assert header_sizes(paths, threads=8) == [header_size(p) for p in paths]
    assert header_sizes(paths)[-1] is None
