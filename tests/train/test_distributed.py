"""Two DDP processes on CPU (gloo), launched the way torchrun launches them."""

import csv
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_ranks(tiny_root, tmp_path, *args: str) -> list[tuple[str, str]]:
    """Train on two gloo ranks launched as torchrun launches them, each with a run folder of its own (rank 1
    writing anything would land in its own); their (stdout, stderr), after both exited 0."""
    port = _free_port()
    processes = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "solution", "train", "--config", "toy-tiny", f"data.root={tiny_root}",
                   f"run.dir={tmp_path / f'rank{rank}'}", "run.workers=0", "run.device=cpu", *args]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=400) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-2000:]
    return outputs


def test_two_ranks_train_in_step_and_only_rank0_writes(tiny_root, tmp_path):
    # 4 tuples a step over 2 ranks: 2 forwards of 1 each, accumulated
    outputs = _two_ranks(tiny_root, tmp_path, "train.epochs=3", "train.lr=3e-4", "train.tuples_per_epoch=16",
                         "train.tuples_per_step=4", "train.tuples_per_forward=1", "train.val_landmarks=0")
    # the test set is described by both ranks (a share each), not by rank 0 while rank 1 waits
    for rank, (_, err) in enumerate(outputs):
        assert re.search(rf"describe test: rank {rank} described \d+ of \d+ images", err), err[-2000:]
    checksums = [re.search(r"rank (\d) final weights checksum (\S+)", err) for _, err in outputs]
    assert [int(m.group(1)) for m in checksums] == [0, 1]
    assert float(checksums[0].group(2)) == float(checksums[1].group(2))

    assert not (tmp_path / "rank1").exists() or not any((tmp_path / "rank1").rglob("*"))
    run = tmp_path / "rank0" / "toy-tiny"
    assert (run / "checkpoint.pt").is_file() and (run / "config.yaml").is_file()
    losses = [float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_two_ranks_keep_arcface_class_centres_in_step(tiny_root, tmp_path):
    """The class centres live outside DDP: their gradient is averaged by hand, or each rank's would drift."""
    outputs = _two_ranks(tiny_root, tmp_path, "train.epochs=1", "train.tuples_per_epoch=8", "train.tuples_per_step=4",
                         "train.tuples_per_forward=1", "train.val_landmarks=0", "train.eval_before=false",
                         "train.loss=arcface+triplet", "train.arcface.subcenters=2")
    centres = [re.search(rf"rank {rank} final class centres checksum (\S+)", err) for rank, (_, err)
               in enumerate(outputs)]
    assert all(centres), outputs[0][1][-2000:]
    assert float(centres[0].group(1)) == float(centres[1].group(1))
    first = torch.load(tmp_path / "rank0/toy-tiny/initial.pt", weights_only=True)
    assert not any("centres" in key for key in first["state_dict"])


def test_two_ranks_share_extraction_and_rank0_merges(tiny_root, tmp_path):
    """`torchrun -m solution extract`: each rank describes its shards on its own device; rank 0 merges them,
    equal to one process describing everything."""
    common = ["--config", "toy-tiny", f"data.root={tiny_root}", "run.workers=0", "run.device=cpu",
              "infer.shard_size=5", "--split", "test"]
    single = tmp_path / "single"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    for runs in (single, tmp_path / "ddp"):
        subprocess.run([sys.executable, "-m", "solution", "train", *common[:5], f"run.dir={runs}", "train.epochs=1",
                        "train.tuples_per_epoch=4", "train.tuples_per_step=2", "train.val_landmarks=0",
                        "train.eval_before=false"], cwd=REPO, env=env, check=True, capture_output=True)
    # the same weights in both run folders, so the two extractions must agree
    (tmp_path / "ddp/toy-tiny/checkpoint.pt").write_bytes((single / "toy-tiny/checkpoint.pt").read_bytes())
    subprocess.run([sys.executable, "-m", "solution", "extract", *common, f"run.dir={single}"], cwd=REPO, env=env,
                   check=True, capture_output=True)
    port = _free_port()
    processes = []
    for rank in range(2):
        rank_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                    "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        processes.append(subprocess.Popen([sys.executable, "-m", "solution", "extract", *common,
                                           f"run.dir={tmp_path / 'ddp'}"], cwd=REPO, env=rank_env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-2000:]
    assert "wrote" in outputs[0][0] and "wrote" not in outputs[1][0]  # rank 0 alone merges
    import numpy as np

    [tag] = [p.name for p in (tmp_path / "ddp/toy-tiny/features").iterdir()]  # 96px-s1-<settings key>
    assert tag.startswith("96px-s1-") and (single / "toy-tiny/features" / tag).is_dir()  # one key, both runs
    parts = sorted((tmp_path / "ddp/toy-tiny/features" / tag / "test").glob("part-*.npy"))
    assert len(parts) == 3  # 12 test images in shards of 5, spread over both ranks
    merged = np.load(tmp_path / "ddp/toy-tiny/features" / tag / "test.npy")
    reference = np.load(single / "toy-tiny/features" / tag / "test.npy")
    assert np.allclose(merged, reference, atol=1e-3)


def test_a_failure_in_rank0_only_work_ends_every_rank_at_once_with_one_line(tiny_root, tmp_path):
    """Rank 0 alone writes the KL pictures; here it cannot (its plots/ is a file). Rank 1 must not wait in the
    next collective until the timeout: it stops with one line naming rank 0's failure."""
    import time

    port = _free_port()
    (tmp_path / "rank0" / "toy-tiny").mkdir(parents=True)
    (tmp_path / "rank0" / "toy-tiny" / "plots").write_text("not a folder")
    processes, started = [], time.perf_counter()
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        args = [sys.executable, "-m", "solution", "train", "--config", "toy-tiny", f"data.root={tiny_root}",
                f"run.dir={tmp_path / f'rank{rank}'}", "run.workers=0", "run.device=cpu", "train.epochs=1",
                "train.tuples_per_epoch=4", "train.tuples_per_step=2", "train.val_landmarks=0",
                "train.eval_before=false", "train.dist_timeout_min=3"]
        processes.append(subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    outputs = [p.communicate(timeout=300) for p in processes]
    assert time.perf_counter() - started < 120  # not the 3-minute collective timeout
    assert all(p.returncode != 0 for p in processes)
    errors = [line for line in outputs[1][1].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 0 failed" in errors[0] and "rank 1 stops" in errors[0], outputs[1][1][-2000:]
    assert "Traceback" not in outputs[1][1]
