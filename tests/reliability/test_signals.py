"""Signals through the real command, in its own process group, as a terminal or a scheduler sends them.

Ctrl-C reaches every process of the foreground group: the DataLoader workers too, which inherit the
command's handlers through fork and printed a KeyboardInterrupt traceback each above the one
``interrupted:`` line (#29). SIGTERM (a scheduler's kill, torchrun stopping the ranks) ended the command
without a word.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], check=False, capture_output=True,
                            text=True).stdout
    return [int(p) for p in listed.split()]


def _training(tiny_root: Path, runs: Path) -> subprocess.Popen:
    """`train` on the tiny set with two DataLoader workers, long enough to be interrupted mid-epoch."""
    argv = [sys.executable, "-m", "solution", "train", "--config", "toy-tiny", f"data.root={tiny_root}",
            f"run.dir={runs}", "run.workers=2", "train.epochs=50", "train.eval_before=false",
            "train.val_landmarks=0", "train.select=last", "train.transfer_check=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SOLUTION_DEBUG", None)
    return subprocess.Popen(argv, cwd=runs, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the signal reaches it and its workers only


def _wait_for_workers(proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"train ended before its workers started: {proc.communicate()}")
        if len(_children(proc.pid)) >= 2:  # the DataLoader's two workers are up
            time.sleep(1.0)
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no DataLoader workers appeared")


@pytest.mark.parametrize(("send", "code", "line"), [
    (lambda proc: os.killpg(proc.pid, signal.SIGINT), 130, "interrupted: completed files are kept"),
    (lambda proc: os.kill(proc.pid, signal.SIGTERM), 143, "interrupted (SIGTERM): completed files are kept"),
], ids=["ctrl-c to the whole group", "sigterm to the command"])
def test_a_signal_mid_epoch_is_one_line_and_no_traceback(tiny_root, tmp_path, send, code, line):
    proc = _training(tiny_root, tmp_path)
    try:
        _wait_for_workers(proc)
        send(proc)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if x.startswith(("interrupted", "error:"))]
    assert lines == [line + "; run the same command again to resume"], err[-3000:]
    assert not _children(proc.pid)
