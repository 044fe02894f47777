"""``make gpu-verify``: the one script to run on the first GPU this project gets, ending in one table.

1. The CPU-executable parts, everywhere: ``plan`` for the shipped GPU recipes (peak memory on fake tensors
   and step counts; does each fit the card it names?) and the kernel's path after extraction on synthetic
   descriptors at 1% of the 2021 size.
2. With a GPU: ``gpu-check`` (every row of it, the float16 search path against float32 among them), the
   kernel's memory rehearsal at the 2021 counts on the real cards, then ``make train`` and ``make submit``
   on the toy with ``run.device=cuda`` (their printed mAP@100 against the CPU figures in the README), then
   the kernel's run on a fake ``/kaggle/input`` with that checkpoint (its mAP@100 against ``submit``'s,
   which must agree within 0.01). About 10 minutes on one H100-class GPU.

Each row: what ran, its figure, a ratio where one applies, and pass / fail. Without a GPU the table holds the
CPU rows and one line says that no GPU was found; the exit code is 0 either way unless a row failed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .bench import format_table

RECIPES = ("gldv2-resnet101-remap", "gldv2-efficientnet-remap", "gldv2-efficientnet-arcface")


def _plan_rows(recipes: tuple[str, ...]) -> list[dict]:
    from ..config import load_config
    from .plan import OVERHEAD_GB, plan_recipe

    rows = []
    for name in recipes:
        cfg = load_config(name)
        gpu = cfg["hardware"]["gpu"] or "t4"
        plan = plan_recipe(cfg, gpu, cfg["hardware"]["gpus"])
        rows.append({"what": f"plan {name} on {plan.gpus} x {gpu}",
                     "figure": f"train step {plan.train_peak_gb:.1f} GiB (+{OVERHEAD_GB}) of {plan.memory_gb:.2f}; "
                               f"{plan.steps:,} steps; {plan.train_hours:.1f} h",
                     "ok": plan.fits_card})
    return rows


def _synthetic_row(work: Path) -> dict:
    from ..config import load_config
    from ..kernel.synthetic import run_synthetic

    started = time.perf_counter()
    report = run_synthetic("2021", load_config("kernel-2021")["infer"], work, slice_rows=500, scale=0.01)
    return {"what": "kernel path after extraction, synthetic 1% of 2021",
            "figure": f"peak RSS {report['peak_rss_mb']:,} MB; {time.perf_counter() - started:.0f}s",
            "ok": report["train_memmap"] and Path(report["submission"]).is_file()}


def _command(what: str, args: list[str], pattern: str, seconds: int = 900) -> tuple[dict, str]:
    """Run ``python -m solution <args>``; the row and the matched figure (empty when it failed)."""
    started = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "solution", *args], capture_output=True, text=True,
                                timeout=seconds, check=False)
        output, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired:
        output, code = f"timed out after {seconds}s", 124
    match = re.search(pattern, output)
    figure = match.group(0) if match and code == 0 else ""
    row = {"what": what, "figure": figure or output.strip().splitlines()[-1][:200] if output.strip() else "",
           "seconds": round(time.perf_counter() - started), "ok": code == 0 and bool(figure)}
    return row, figure


def run(recipes: tuple[str, ...] = RECIPES, gpu: bool | None = None) -> tuple[str, bool]:
    """(the report, whether every row passed)."""
    gpu = torch.cuda.is_available() if gpu is None else gpu
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = _plan_rows(recipes)
        rows.append(_synthetic_row(tmp / "synthetic"))
        if not gpu:
            return (f"{format_table(rows)}\ngpu-verify: no GPU found (torch.cuda.is_available() is False); the CPU "
                    "rows above ran, the GPU rows did not", all(r["ok"] for r in rows))
        from .gpu_check import check_rows, device_line

        started = time.perf_counter()
        checks = check_rows()
        failed = [r for r in checks if r["ok"] is False]
        check = f"{device_line()}\n{format_table(checks)}"
        rows.append({"what": "gpu-check", "figure": f"{len(checks)} rows, {len(failed)} failed",
                     "seconds": round(time.perf_counter() - started), "ok": not failed})
        rows.extend(_rehearsal_rows())
        common = ["--config", "toy", "run.device=cuda", "run.name=gpu-verify", f"run.dir={tmp / 'runs'}"]
        data = subprocess.run([sys.executable, "-m", "solution", "data", "--config", "toy"], capture_output=True,
                              check=False)  # what `make train` runs first
        train, _ = _command("make train (toy, cuda)", ["train", *common], r"after \d\.\d+ \[[^]]*\]")
        rows.append(train)
        submit, figure = _command("make submit (toy, cuda)", ["submit", *common, "--out", str(tmp / "subs")],
                                  r"all=\d\.\d+")
        rows.append(submit)
        kernel = _kernel_row(tmp, float(figure.split("=")[1]) if figure else None) if data.returncode == 0 else \
            {"what": "kernel run", "ok": False, "figure": "no toy data"}
        rows.append(kernel)
    return f"{check}\n\n{format_table(rows)}", all(r["ok"] for r in rows)


def _rehearsal_rows() -> list[dict]:
    """The kernel's memory rehearsal at the 2021 counts on this machine's GPUs (no train descriptors): each
    search's index built from synthetic rows at its hidden size, one query chunk searched, the measured peak
    beside the projection."""
    from ..kernel.contract import KernelError
    from ..kernel.rehearse import gpu_cards, gpu_stage_runner, rehearse
    from ..kernel.run import HIDDEN_INDEX_IMAGES, HIDDEN_TEST_IMAGES

    cfg = {"topk": 100, "index": {"type": "flat", "dtype": "float16"}, "dba": {"enabled": True, "k": 10},
           "label_rerank": {"enabled": False, "k": 20}}
    started = time.perf_counter()
    try:
        stages = rehearse(HIDDEN_TEST_IMAGES, HIDDEN_INDEX_IMAGES, 0, 2048, cfg, gpu_stage_runner(2048, "float16"),
                          gpu_cards())
    except KernelError as exc:
        return [{"what": "kernel memory rehearsal (2021 counts, 2,048-D float16)", "figure": str(exc), "ok": False}]
    return [{"what": f"kernel memory rehearsal: {s['stage']}",
             "figure": f"measured {s['measured_gib']:.2f} GiB, projected {s['projected_gib']:.2f} of "
                       f"{s['card_gib']:.2f} GiB", "seconds": round(time.perf_counter() - started),
             "ok": s["measured_gib"] <= s["card_gib"]} for s in stages]


def _kernel_row(tmp: Path, submit_all: float | None) -> dict:
    """The kernel's run on a fake input root with the gpu-verify checkpoint, scored against `submit`'s."""
    import json

    from ..competition import load_competition
    from ..data.gldv2 import read_solution
    from ..infer.submission import submission_rankings
    from ..kernel.contract import MODEL_MARKER
    from ..kernel.run import run as kernel_run
    from ..kernel.simulate import mount
    from ..metrics import score_submission

    comp = load_competition("toy")
    data = comp.data_dir("inputs")
    checkpoint = tmp / "runs" / "gpu-verify" / "checkpoint.pt"
    model = tmp / "kaggle" / "model"
    model.mkdir(parents=True)
    model.joinpath("checkpoint.pt").write_bytes(checkpoint.read_bytes())
    payload = torch.load(checkpoint, weights_only=True, map_location="cpu")
    model.joinpath(MODEL_MARKER).write_text(json.dumps({"checkpoint_sha256": "gpu-verify",
                                                        "infer": payload["config"]["infer"]}))
    root = mount(tmp / "kaggle", data, tmp / "input", "new", datasets=("model",))
    started = time.perf_counter()
    out = kernel_run(root, tmp / "working", limit_s=32400, full=True)
    scores = score_submission(submission_rankings(out), read_solution(data / "retrieval_solution_v2.1.csv"), 100)
    agree = submit_all is not None and abs(scores["all"] - submit_all) <= 0.01
    return {"what": "kernel run on a fake /kaggle/input (cuda)", "figure": f"all={scores['all']:.4f}",
            "ratio": f"vs submit {submit_all}", "seconds": round(time.perf_counter() - started), "ok": agree}
