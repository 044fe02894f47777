"""The REMAP side commands: kl (weights + pictures into the checkpoint), export, bench."""

import json

import numpy as np
import pytest
import torch

from solution.cli import main
from solution.model import load_checkpoint

TINY = ["--config", "toy-remap", "data.root=inputs", "data.toy_size=tiny", "run.workers=0",
        "model.kl.images=24", "model.kl.pairs=200", "model.kl.image_size=96", "infer.image_size=96",
        "model.whiten_dim=8", "train.val_landmarks=2", "train.epochs=1", "train.tuples_per_epoch=4",
        "train.tuples_per_step=2",
        "train.neg_num=2", "train.pool_size=16", "train.image_size=96"]


def test_kl_then_train_keeps_kl_weights_and_fits_whitening(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", *TINY]) == 0
    assert main(["kl", *TINY]) == 0
    assert "kl_heatmap.png" in capsys.readouterr().out
    for picture in ("kl_heatmap.png", "kl_regions.png"):
        assert (tmp_path / "runs/toy-remap/plots" / picture).stat().st_size > 1000
    net, state = load_checkpoint(tmp_path / "runs/toy-remap/checkpoint.pt")
    assert net.meta["kl_fitted"] and not net.meta["whitening_fitted"] and state["epoch"] == 0
    weights = net.head.region_weights.detach()
    assert weights.shape == (2, 41) and (weights >= 0).all() and weights.std() > 0
    assert torch.allclose(weights.mean(), torch.tensor(1.0), atol=1e-3)

    assert main(["train", *TINY, "train.region_lr=0"]) == 0  # the weights frozen: the KL weights must survive
    trained, _ = load_checkpoint(tmp_path / "runs/toy-remap/checkpoint.pt")
    assert trained.meta["whitening_fitted"]
    assert torch.allclose(trained.head.region_weights, weights, atol=1e-5)
    assert "REMAP region weights moved from their KL start" in capsys.readouterr().out
    moved = json.loads((tmp_path / "runs/toy-remap/region_weights.json").read_text())["moved"]
    assert max(m["max"] for m in moved.values()) < 1e-4


def test_remap_weights_move_in_two_steps(tmp_path, monkeypatch, capsys):
    """At train.region_lr (0.01) an Adam step moves each weight by about 0.01, 1% of the mean start weight (1);
    the softplus weights at the head's rate (1e-3, times the softplus slope) moved under 0.1% a step."""
    monkeypatch.chdir(tmp_path)
    assert main(["data", *TINY]) == 0
    assert main(["train", *TINY, "train.transfer_check=false"]) == 0
    out = capsys.readouterr().out
    assert "train: REMAP region weights moved from their KL start" in out and "stage 3 mean" in out
    run = tmp_path / "runs/toy-remap"
    saved = json.loads((run / "region_weights.json").read_text())
    assert set(saved["moved"]) == {"stage 3", "stage 4"}  # EfficientNet-Lite0's last two feature stages
    assert all(m["mean"] > 0.004 for m in saved["moved"].values()), saved["moved"]
    start, end = np.array(saved["initial"]), np.array(saved["trained"])
    assert np.isclose(start.mean(), 1.0, atol=1e-3) and (end >= 0).all()
    assert (run / "plots/region_weights.png").stat().st_size > 1000
    assert json.loads((run / "train.json").read_text())["weights_moved"] == saved["moved"]

    assert main(["export", *TINY, "--size", "96x64"]) == 0
    assert (tmp_path / "runs/toy-remap/export/model-96x64.pt").is_file()


def test_kl_refuses_heads_without_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["kl", "--config", "toy-gem", "data.root=inputs"]) == 2
    assert "model.head=remap" in capsys.readouterr().err


def test_bench_model_writes_ratios(tmp_path, capsys):
    args = ["bench", "model", "--backbones", "tf_efficientnet_lite0", "--height", "64", "--width", "64",
            "--batch", "1", "--repeats", "3", "--out", str(tmp_path)]
    assert main(args) == 0
    payload = json.loads((tmp_path / "model.json").read_text())
    assert [row["head"] for row in payload["rows"]] == ["remap", "rmac", "gem"]
    assert all(row["ratio"] > 0 for row in payload["rows"]) and payload["section_peak_rss_mb"] > 0
    for row in payload["rows"]:
        low, high = (float(v) for v in row["ratio_p10_p90"].split("-"))
        assert low <= row["ratio"] <= high and row["repeats"] == 3
    assert payload["device"] == "cpu"
    assert "| backbone | head |" in capsys.readouterr().out


def test_bench_decode_times_the_real_data_path_on_photo_sized_jpegs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "decode", "--decode-images", "6", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "decode.json").read_text())["rows"][0]
    assert row["img_s_one_core"] > 0 and row["img_s_per_core"] > 0 and row["megapixels"] == 0.5
    assert 40 < row["mean_kb"] < 400  # photo-like compression, not a flat colour or pure noise
    assert "section peak RSS" in capsys.readouterr().out


def test_bench_search_small(tmp_path, capsys):
    args = ["bench", "search", "--index-size", "2000", "--queries", "100", "--gemm-size", "512", "--out",
            str(tmp_path)]
    assert main(args) == 0
    row, against_peak = json.loads((tmp_path / "search.json").read_text())["rows"]
    assert row["ratio"] > 0 and row["index"] == "2000x512"
    assert against_peak["index"] == "2000x2048" and against_peak["sgemm_peak_gflops"] > 0
    pairs = [tuple(map(float, pair.split("/"))) for pair in against_peak["pairs_search_over_peak"].split()]
    assert len(pairs) == 5 and all(search > 0 and peak > 0 for search, peak in pairs)
    shares = sorted(search / peak for search, peak in pairs)  # each search against the peak measured beside it
    assert against_peak["share_of_peak"] == pytest.approx(shares[2], abs=0.005)
    low, high = map(float, against_peak["share_range"].split("-"))
    assert low == pytest.approx(shares[0], abs=0.005) and high == pytest.approx(shares[-1], abs=0.005)


def test_bench_scale_runs_the_real_retrieve_on_a_float16_index_handed_over(tmp_path, capsys, monkeypatch):
    import solution.infer.retrieve as retrieve_module

    calls = []
    real = retrieve_module.retrieve

    def spy(query, index, cfg, *args, **kwargs):
        calls.append((index.dtype, index.shape, kwargs.get("in_place"), cfg["qe"]["enabled"]))
        return real(query, index, cfg, *args, **kwargs)

    monkeypatch.setattr(retrieve_module, "retrieve", spy)
    args = ["bench", "scale", "--scale-index", "3000", "--scale-queries", "40", "--dim", "64", "--dtype", "float16",
            "--dba-slice", "1000", "--out", str(tmp_path)]
    assert main(args) == 0
    assert calls == [(np.dtype(np.float16), (3000, 64), True, True)]
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    search, dba, sq, projection = rows
    assert search["index"] == "3000x64 float16" and search["index_mb"] == round(3000 * 64 * 2 / 2**20)
    assert search["peak_mb"] >= search["baseline_mb"] and isinstance(search["within_1.5x"], bool)
    assert dba["index"] == "1000x64 float16" and abs(dba["projected_full_s"] - dba["seconds"] * 9) <= 1  # (3000/1000)^2
    assert sq["speedup"] > 0 and projection["search_qe_tflop"] == round(4 * 117_577 * 761_757 * 64 / 1e12)


def test_bench_folder_lists_hashes_splits_and_cleans_up(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "folder", "--folder-files", "400", "--folder-labels", "40", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "folder.json").read_text())["rows"][0]
    assert row["files"] == 400 and row["hash_s"] > 0 and row["files_s_hashed"] > 0
    assert row["train_images"] == 200 and row["test_images"] + row["val_images"] + row["index_images"] == 200
    assert not (tmp_path / "folder").exists()  # the generated files are removed: a full disk failed CI before
    assert "bench folder on cpu" in capsys.readouterr().out


@pytest.mark.parametrize("loss", ["arcface", "triplet"])
def test_bench_train_times_the_configured_loss_and_the_mining_a_triplet_adds(loss, tmp_path, monkeypatch, capsys):
    """The toy trains with ArcFace, whose step needs its class centres and labels: a bench built for the triplet
    alone failed there (no gradient)."""
    monkeypatch.chdir(tmp_path)
    tiny = ["--config", "toy", "data.root=inputs", "data.toy_size=tiny", "run.workers=0", "model.whiten_dim=8",
            "train.val_landmarks=2", "train.neg_num=2", "train.pool_size=16", "train.tuples_per_step=2",
            "train.image_size=64", "infer.image_size=64", f"train.loss={loss}"]
    assert main(["data", *tiny]) == 0
    assert main(["bench", "train", "--steps", "2", "--out", str(tmp_path), *tiny[2:]]) == 0
    row = json.loads((tmp_path / "train.json").read_text())["rows"][0]
    assert row["images"] == 2 * 2 * (2 + 2) and row["loop_img_s"] > 0 and row["bare_img_s"] > 0
    assert row["mine_s"] > 0 and 0 < row["mining_share"] < 1
