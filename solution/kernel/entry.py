"""Kaggle kernel entry script (copied into the kernel folder as ``entry.py``; standard library only).

1. installs this project and its missing dependencies from the attached wheels dataset, offline;
2. finds the competition data and the model under the input root;
3. describes test and index on the GPU, searches, post-processes;
4. writes <working>/submission.csv.

KAGGLE_INPUT_ROOT and KAGGLE_WORKING_DIR override /kaggle/input and /kaggle/working (for tests);
KERNEL_PIP_TARGET installs into a folder instead of the environment; KERNEL_TIME_LIMIT_S sets the
notebook limit the run must fit (default 9 hours).
"""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

INPUT = Path(os.environ.get("KAGGLE_INPUT_ROOT", "/kaggle/input"))
WORKING = Path(os.environ.get("KAGGLE_WORKING_DIR", "/kaggle/working"))
PACKAGE = "remap-landmarks"


def install_wheels() -> None:
    wheels = sorted({p.parent for p in INPUT.glob("*/*.whl")})
    if not wheels:
        raise SystemExit(f"no wheels under {INPUT}; attach the wheels dataset built by `make kernel`")
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--quiet", PACKAGE]
    for folder in wheels:
        command += ["--find-links", str(folder)]
    target = os.environ.get("KERNEL_PIP_TARGET")
    if target:
        command += ["--no-deps", "--target", target]
        sys.path.insert(0, target)
    subprocess.run(command, check=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    install_wheels()
    logging.getLogger("entry").info("stage install: %.0fs", time.perf_counter() - started)
    from solution.kernel.run import run

    WORKING.mkdir(parents=True, exist_ok=True)
    run(INPUT, WORKING, float(os.environ.get("KERNEL_TIME_LIMIT_S", "32400")))  # 9 hours


if __name__ == "__main__":
    main()
