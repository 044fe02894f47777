"""Stages of the offline Kaggle kernel: build it, dry-run it as a notebook would, push it, submit it.

Each ``cmd_*`` is registered with ``@stage``, its arguments beside it; it loads the config and calls
the package's own functions."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..config import ConfigError, load_config, run_dir
from ..runtime import data_workers
from .registry import arg, config_of, number, stage, whole

DRYRUN_WORK = "runs/kernel-dryrun"


@stage("kernel", "wheels, model and kernel folders for an offline Kaggle GPU kernel",
       arg("--competition", default="landmark-retrieval-2021"),
       arg("--checkpoint", help="default: the run's checkpoint.pt"),
       arg("--user", default="your-kaggle-name", help="Kaggle user that owns the datasets and kernel"),
       arg("--out", default="kaggle"),
       arg("--no-download", action="store_true",
           help="only this project's wheel, no faiss (the kernel then stops at once, saying so)"),
       arg("--python-version", action="append",
           help="a Python to ship faiss for, repeatable (default: 3.11, 3.12 and 3.13; Kaggle's GPU image "
           "runs 3.12)"),
       arg("--platform", action="append", help="wheel platform tag, repeatable (default: Kaggle's)"),
       arg("--faiss", action="append", choices=["gpu", "cpu"], help="faiss builds to ship (default both)"),
       arg("--train-features", action="store_true",
           help="also describe train(-clean) and ship it for label re-ranking (a third dataset)"),
       arg("--machine-shape", default="NvidiaTeslaT4",
           help="the accelerator kernel-metadata.json asks for (Kaggle's name; default NvidiaTeslaT4: two T4s)"),
       config_default=None)
def cmd_kernel(args: argparse.Namespace) -> int:
    from ..atomic import check_replaceable
    from ..competition import load_competition
    from ..kernel.build import KAGGLE_PLATFORMS, KAGGLE_PYTHONS, build, check_describes, check_machine_shape
    from ..kernel.contract import infer_summary
    from ..model.net import load_checkpoint

    cfg = load_config(args.config or "toy", args.overrides)
    comp = load_competition(args.competition)
    if comp.kind != "code":
        raise ConfigError(f"competition '{comp.slug}' takes a CSV upload, not a kernel; use `make submit KAGGLE=1`")
    if cfg["ensemble"]["members"] and args.train_features:
        raise ConfigError("--train-features describes train with one checkpoint; an ensemble kernel has no "
                          "label re-ranking yet: drop TRAIN_FEATURES=1")
    check_replaceable(args.out, "kernel --out")  # before any work: a user's folder is never replaced
    check_machine_shape(args.machine_shape)
    ensemble = _kernel_ensemble(cfg) if cfg["ensemble"]["members"] else None
    checkpoint = Path(ensemble["members"][0]["checkpoint"] if ensemble else
                      args.checkpoint or run_dir(cfg) / "checkpoint.pt")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train first or pass CHECKPOINT=...")
    first, payload = load_checkpoint(checkpoint)  # weights-only, as the kernel loads it; read once
    infer_cfg, source = _kernel_infer(cfg, args, payload, checkpoint, comp.slug)
    print(f"kernel: inference settings from {source}: {infer_summary(infer_cfg)}")
    if infer_cfg["label_rerank"]["enabled"] and not args.train_features:
        print("kernel: warning: these settings ask for label re-ranking, which needs the train descriptors; "
              "without TRAIN_FEATURES=1 the kernel runs without it (add TRAIN_FEATURES=1, or set "
              "infer.label_rerank.enabled=false to say so)")
    shipped = [Path(m["checkpoint"]) for m in ensemble["members"]] if ensemble else [checkpoint]
    # each loads and describes one image, as on Kaggle
    dims = [check_describes(first if path == checkpoint else load_checkpoint(path)[0], path, infer_cfg)
            for path in shipped]
    if ensemble:
        from ..infer.ensemble import check_whitening

        check_whitening(ensemble["whitening"], ensemble["saved"], ensemble["listed"], dims, cfg["ensemble"])
    train_features = _train_features({**cfg, "infer": infer_cfg}, checkpoint) if args.train_features else None
    folders = build(args.out, comp.slug, checkpoint, args.user, infer_cfg, source,
                    download_deps=not args.no_download, python_versions=args.python_version or KAGGLE_PYTHONS,
                    platforms=args.platform or KAGGLE_PLATFORMS, faiss=tuple(args.faiss or ("gpu", "cpu")),
                    train_features=train_features, ensemble=ensemble, machine_shape=args.machine_shape)
    print(f"kernel: checked {len(shipped)} checkpoint(s) (loaded weights-only, one image described: {dims[0]}-D); "
          f"wrote {', '.join(str(f) for f in folders.values())} with faiss for Python "
          f"{', '.join(args.python_version or KAGGLE_PYTHONS)}; push with `make kernel-push`")
    return 0


def _kernel_infer(cfg: dict, args: argparse.Namespace, payload: dict, checkpoint: Path, slug: str
                  ) -> tuple[dict, str]:
    """The kernel's ``infer`` settings and where they come from: the config when one was named (a recipe for
    the kernel's competition, or the run's own), else the checkpoint's saved config. A config written for
    another competition (the toy's 192 px on a GLDv2 checkpoint) is refused. ``payload``: the checkpoint's."""
    from ..config import config_from_saved

    saved = payload.get("config") or {}
    trained_on = saved.get("competition", "?")
    if args.config is None:
        own = config_from_saved(saved, args.overrides, f"{checkpoint}'s config")
        return own["infer"], f"the checkpoint's own config ({checkpoint}, trained on {trained_on})"
    if cfg["competition"] not in (slug, trained_on):
        raise ConfigError(f"CONFIG={args.config} holds inference settings for '{cfg['competition']}', but {checkpoint} "
                          f"was trained on '{trained_on}' and the kernel is for '{slug}'; pass a recipe for {slug} "
                          "(CONFIG=kernel-2021) or leave CONFIG out to use the checkpoint's own settings")
    return cfg["infer"], f"config {args.config}"


def _kernel_ensemble(cfg: dict) -> dict:
    """The members' checkpoints and the whitening `ensemble` saved for this config (checked against it once
    the members' dimensions are known)."""
    from ..infer.ensemble import load_whitening, members

    listed = members(cfg)
    path = run_dir(cfg) / "whitening.npz"
    return {"members": [{"run": run, "weight": weight, "checkpoint": Path(cfg["run"]["dir"]) / run / "checkpoint.pt"}
                        for run, weight in listed], "whitening": path, "saved": load_whitening(path), "listed": listed}


def _train_features(cfg: dict, checkpoint: Path) -> dict:
    """The run's train(-clean) descriptors with the checkpoint's own TTA, and their landmark ids."""
    from ..competition import load_competition
    from ..data.gldv2 import read_train, read_train_clean
    from ..infer.features import features, tta_tag
    from ..infer.pipeline import run_net

    net, device = run_net(cfg, checkpoint)
    comp = load_competition(cfg["competition"])
    root = cfg["data"]["root"]
    descriptors, ids = features(net, comp, root, "train", run_dir(cfg) / "features", cfg["infer"], device,
                                data_workers(cfg["run"]["workers"]))
    clean = comp.csv_path(root, "train_clean_csv")
    table = read_train_clean(clean) if clean.is_file() else read_train(comp.csv_path(root, "train_csv"))
    labels = table.drop_duplicates("id").set_index("id")["landmark_id"].loc[ids].to_numpy()
    return {"descriptors": descriptors, "ids": ids, "labels": labels, "tta": tta_tag(cfg["infer"])}


@stage("kernel-dryrun", "run `make kernel`'s output as a Kaggle notebook would: a fake "
                       "/kaggle/input, no network, no faiss or project but what the wheels install",
       arg("--kaggle", default="kaggle", help="the folder `make kernel` wrote"),
       arg("--competition-dir", help="images to mount (default: the config's competition data)"),
       arg("--layout", choices=["old", "new"], default="new", help="Kaggle's mounts: old or current"),
       arg("--test-images", type=whole(1), help="pad the test set to this many images (1129: the public one)"),
       arg("--full", action="store_true", help="KERNEL_FULL=1: the full run even on a small test set"),
       arg("--time-limit", type=number(above=0), help="KERNEL_TIME_LIMIT_S (default: the notebook's 9 hours)"),
       arg("--work", default=DRYRUN_WORK, help="where the input, notebook and output go"),
       arg("--synthetic", choices=["2021"], help="no images: the kernel's path after extraction on "
           "synthetic descriptors of the 2021 counts, to measure memory and time at the real size"),
       arg("--slice-rows", type=whole(1), default=2000,
           help="--synthetic: query rows each all-pairs product really computes (the rest projected)"),
       arg("--scale", type=number(above=0, at_most=1), default=1.0,
           help="--synthetic: a fraction of the real counts"))
def cmd_kernel_dryrun(args: argparse.Namespace) -> int:
    import shutil

    from ..atomic import check_replaceable, mark_owned
    from ..competition import load_competition
    from ..infer.submission import validate_submission
    from ..kernel.run import list_images
    from ..kernel.simulate import mount, notebook_python, run_entry

    cfg = config_of(args)
    if args.synthetic:
        return _synthetic_dryrun(cfg, args)
    kaggle_dir = Path(args.kaggle)
    if not (kaggle_dir / "kernel" / "entry.py").is_file():
        raise FileNotFoundError(f"{kaggle_dir}/kernel/entry.py does not exist; run `make kernel` first")
    competition_dir = Path(args.competition_dir or load_competition(cfg["competition"]).data_dir(cfg["data"]["root"]))
    work = check_replaceable(args.work, "kernel-dryrun --work")  # only a dry run's own folder is replaced
    if args.test_images:
        _check_room_for_test_images(competition_dir / "test", work, args.test_images)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    mark_owned(work, "kernel-dryrun --work")
    root = mount(kaggle_dir, competition_dir, work / "input", args.layout, args.test_images)
    python, env, _ = notebook_python(work / "notebook")
    # the user's own KERNEL_* settings reach the notebook as they would on Kaggle; the flags come on top
    settings = {k: v for k, v in os.environ.items() if k.startswith("KERNEL_") and k != "KERNEL_STARTED_AT"}
    if args.full:
        settings["KERNEL_FULL"] = "1"
    if args.time_limit:
        settings["KERNEL_TIME_LIMIT_S"] = str(args.time_limit)
    started = time.perf_counter()
    result = run_entry(python, env, kaggle_dir / "kernel" / "entry.py", root, work / "working", settings,
                       capture=False)
    seconds = time.perf_counter() - started
    if result.returncode:  # the kernel printed its own `error:` line: one is enough
        print(f"kernel-dryrun: the kernel exited {result.returncode} after {seconds:.0f}s (its error line is above)",
              file=sys.stderr)
        return result.returncode
    submission = work / "working" / "submission.csv"
    data = next(p for p in root.rglob("sample_submission.csv")).parent
    test_ids = list_images(data / "test")[0]
    problems = validate_submission(submission, test_ids, list_images(data / "index")[0])
    print(f"kernel-dryrun: the kernel ran in {seconds:.0f}s ({args.layout} layout, "
          f"{len(test_ids)} test images); {submission}: "
          f"{'valid' if not problems else '; '.join(problems[:3])}")
    return 1 if problems else 0


def _check_room_for_test_images(test_dir: Path, work: Path, count: int) -> None:
    """The padded test set is copied: refuse a count whose copies would not fit the disk, before any copy."""
    import shutil

    sizes = [p.stat().st_size for p in list(test_dir.rglob("*.jpg"))[:200]]
    need = count * (sum(sizes) / len(sizes) if sizes else 0)
    probe = next((p for p in (work, *work.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if need > 0.9 * free:
        raise ConfigError(f"--test-images {count:,} would copy about {need / 1e9:.1f} GB into {work}, which has "
                          f"{free / 1e9:.1f} GB free; ask for fewer (1129 is the public test set)")


def _synthetic_dryrun(cfg: dict, args: argparse.Namespace) -> int:
    from ..kernel.contract import infer_summary
    from ..kernel.synthetic import run_synthetic

    work = Path(args.work if args.work != DRYRUN_WORK else f"{DRYRUN_WORK}-synthetic")
    print(f"kernel-dryrun: synthetic {args.synthetic} with {infer_summary(cfg['infer'])} + label re-ranking, "
          f"in {work}")
    report = run_synthetic(args.synthetic, cfg["infer"], work, args.slice_rows, args.scale)
    sizes = report["sizes"]
    print(f"kernel-dryrun: {sizes['index']:,} index, {sizes['test']:,} test, {sizes['train']:,} train descriptors of "
          f"{sizes['dim']}-D (index {report['index_dtype']}, train {report['train_dtype']} memory-mapped: "
          f"{report['train_memmap']})")
    print(f"kernel-dryrun: peak RSS {report['peak_rss_mb']:,} MB ({report['peak_covers']}; "
          f"{report['baseline_rss_mb']:,} MB before the data)")
    print(f"kernel-dryrun: after extraction {report['after_extraction_s']:.0f}s here with products on "
          f"{report['slice_rows']} rows a call; projected {report['projected_after_extraction_here_s']:,}s here "
          f"for every row, {report['projected_t4_search_s']:,}s on a T4 ({report['search_tflop']:,} TFLOP at an "
          f"assumed {report['t4_assumed_tflops']} TFLOPS, plus the rest as measured here)")
    print(f"kernel-dryrun: {report['submission']}: valid; report in {work / 'report.json'}")
    return 0


@stage("kaggle", "push the kernel's datasets and notebook, or submit a kernel version",
       arg("action", choices=["push", "submit"]),
       arg("--dir", default="kaggle", help="push: the folder `make kernel` wrote"),
       arg("--wait", type=number(at_least=0), default=1800,
           help="push: seconds to wait for the datasets to be ready"),
       arg("--competition", default="landmark-retrieval-2021", help="submit: the competition"),
       arg("--kernel", help="submit: owner/slug of the notebook"),
       arg("--version", type=whole(1), help="submit: the notebook version to submit"),
       arg("--message", default="REMAP kernel", help="submit: the submission's description"),
       config=False)
def cmd_kaggle(args: argparse.Namespace) -> int:
    from .. import kaggle_api

    try:
        if args.action == "push":
            refs = kaggle_api.push(Path(args.dir), wait_s=args.wait)
            print(f"kaggle: pushed {', '.join(refs)}")
        else:
            ref = kaggle_api.submit_kernel(args.competition, args.kernel, args.version, args.message)
            print(f"kaggle: submitted {args.kernel} version {args.version} to {args.competition} (ref {ref})")
    except kaggle_api.KaggleError as exc:
        raise ConfigError(str(exc)) from None
    return 0
