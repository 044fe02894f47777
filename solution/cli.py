"""``python -m solution <stage>``: thin subcommands that parse, load the config and call one function."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from .atomic import run_lock
from .config import ConfigError, load_config, run_dir
from .runtime import data_workers

log = logging.getLogger("solution")
DRYRUN_WORK = "runs/kernel-dryrun"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="toy", help="experiment YAML: a path or a name in solution/configs")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")


def whole(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (a size, a count), else argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def number(above: float | None = None, at_least: float | None = None, at_most: float | None = None):
    """An argparse type: a finite number in the given range."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value) or (above is not None and value <= above) or (
                at_least is not None and value < at_least) or (at_most is not None and value > at_most):
            bounds = [f"> {above}" if above is not None else "", f">= {at_least}" if at_least is not None else "",
                      f"<= {at_most}" if at_most is not None else ""]
            raise argparse.ArgumentTypeError(f"{value} is not {' and '.join(b for b in bounds if b)}")
        return value
    parse.__name__ = "number"
    return parse


def _add_common_args(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default)
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error (also SOLUTION_DEBUG=1, true or yes)")


def _config(args: argparse.Namespace) -> dict:
    return load_config(args.config, args.overrides)


def cmd_data(args: argparse.Namespace) -> int:
    from .competition import load_competition
    from .data import toy
    from .viz import data_contact_sheet

    cfg = _config(args)
    slug = args.competition or cfg["competition"]
    comp = load_competition(slug)
    target = comp.data_dir(cfg["data"]["root"])
    if comp.source == "gldv2":
        from .data.download import download_gldv2

        started = time.perf_counter()
        counts = download_gldv2(target, args.splits, args.shards, args.workers, args.train_clean, args.keep_tars)
        print(f"data: GLDv2 {' '.join(args.splits)} shards {args.shards or 'all'}: {counts['done']} downloaded "
              f"and verified, {counts['skipped']} already there, in {time.perf_counter() - started:.0f}s; "
              f"images under {target}")
        return 0
    if comp.source == "kaggle":
        from . import kaggle_api

        started = time.perf_counter()
        try:
            written = kaggle_api.download_competition(slug, target, args.files)
        except kaggle_api.KaggleError as exc:
            raise ConfigError(str(exc)) from None
        print(f"data: {slug}: {len(written)} entries in {target} after {time.perf_counter() - started:.0f}s")
        return 0
    size = args.size or cfg["data"]["toy_size"]
    started = time.perf_counter()
    toy.generate(target, size=size, seed=cfg["data"]["toy_seed"], workers=data_workers(cfg["run"]["workers"]))
    sheet = data_contact_sheet(target, target / "contact_sheet.png")
    print(f"data: wrote the {size} toy competition to {target} in {time.perf_counter() - started:.1f}s "
          f"(contact sheet {sheet})")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from .competition import load_competition
    from .data.gldv2 import read_solution
    from .viz import data_contact_sheet, retrieval_gallery

    cfg = _config(args)
    comp = load_competition(cfg["competition"])
    target = comp.data_dir(cfg["data"]["root"])
    if args.kind == "data":
        print(f"viz data: wrote {data_contact_sheet(target, target / 'contact_sheet.png')}")
        return 0
    ranking = run_dir(cfg) / "ranking.npz"
    solution_path = comp.csv_path(cfg["data"]["root"], "solution_csv")
    solution = read_solution(solution_path) if solution_path.is_file() else None
    if args.queries < 1 or args.topk < 1:
        raise ConfigError(f"--queries {args.queries} --topk {args.topk}: both must be at least 1")
    out = retrieval_gallery(target, ranking, run_dir(cfg) / "plots" / "retrieval.png", solution, args.queries,
                            args.topk)
    print(f"viz retrieval: wrote {out}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    """``--shard i/n`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: want i/n, e.g. --shard 0/4 (the first of four)") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: want i/n with 0 <= i < n")
    return index, count


def _size(text: str) -> tuple[int, int]:
    """``--size HxW`` -> (height, width), both > 0."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text}: want HxW in pixels, e.g. --size 384x512") from None
    if height <= 0 or width <= 0:
        raise ConfigError(f"--size {text}: both sides must be > 0")
    return height, width


def cmd_extract(args: argparse.Namespace) -> int:
    from .competition import load_competition
    from .infer.features import extract_split, merge_split, split_ids
    from .infer.pipeline import run_net
    from .train.distributed import Dist, barrier, init_distributed, shutdown

    cfg = _config(args)
    info = Dist()
    if args.shard:
        index, count = _shard(args.shard)
    else:  # under torchrun every rank takes its share of the shards; rank 0 merges once all are written
        info = init_distributed(cfg["run"]["device"], cfg["train"]["dist_timeout_min"])
        index, count = info.rank, info.world
    comp = load_competition(cfg["competition"])
    run = run_dir(cfg)
    net, device = run_net(cfg)
    try:
        for split in args.split or ["index", "test"]:
            folder = extract_split(net, comp, cfg["data"]["root"], split, run / "features", cfg["infer"], device,
                                   data_workers(cfg["run"]["workers"]), (index, count), info)
            barrier(info)
            if info.main and (count == 1 or args.merge or info.active):
                descriptors, ids, bad = merge_split(folder, split_ids(comp, cfg["data"]["root"], split),
                                                    dim=net.dim, stored=cfg["infer"]["dtype"])
                print(f"extract: {split}: {descriptors.shape[0]} x {descriptors.shape[1]} descriptors, {len(bad)} "
                      f"unreadable; wrote {folder.parent / split}.npy")
            elif not info.active:
                print(f"extract: {split}: shard {index}/{count} done in {folder}; merge with --merge once all are")
    finally:
        shutdown(info)
    return 0


def cmd_evaluate_revisitop(args: argparse.Namespace) -> int:
    from .data.revisitop import download
    from .infer.pipeline import run_net
    from .infer.revisitop_eval import evaluate_revisitop

    cfg = _config(args)
    folder = Path(args.root) / args.dataset
    if args.download and not (folder / f"gnd_{args.dataset}.pkl").is_file():
        download(args.root, args.dataset)
    if not (folder / f"gnd_{args.dataset}.pkl").is_file():
        raise FileNotFoundError(f"{folder}/gnd_{args.dataset}.pkl does not exist; add --download")
    net, device = run_net(cfg, args.checkpoint)
    results = evaluate_revisitop(net, folder, cfg["infer"], device, data_workers(cfg["run"]["workers"]))
    for label, scores in results.items():
        print(f"{args.dataset} {label}: mAP E {scores['easy']:.2f}  M {scores['medium']:.2f}  H {scores['hard']:.2f}")
    return 0


def cmd_kernel(args: argparse.Namespace) -> int:
    from .atomic import check_replaceable
    from .competition import load_competition
    from .kernel.build import KAGGLE_PLATFORMS, KAGGLE_PYTHONS, build, check_checkpoint
    from .kernel.contract import infer_summary

    cfg = load_config(args.config or "toy", args.overrides)
    comp = load_competition(args.competition)
    if comp.kind != "code":
        raise ConfigError(f"competition '{comp.slug}' takes a CSV upload, not a kernel; use `make submit KAGGLE=1`")
    if cfg["ensemble"]["members"] and args.train_features:
        raise ConfigError("--train-features describes train with one checkpoint; an ensemble kernel has no "
                          "label re-ranking yet: drop TRAIN_FEATURES=1")
    check_replaceable(args.out, "kernel --out")  # before any work: a user's folder is never replaced
    ensemble = _kernel_ensemble(cfg) if cfg["ensemble"]["members"] else None
    checkpoint = Path(ensemble["members"][0]["checkpoint"] if ensemble else
                      args.checkpoint or run_dir(cfg) / "checkpoint.pt")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train first or pass CHECKPOINT=...")
    infer_cfg, source = _kernel_infer(cfg, args, checkpoint, comp.slug)
    print(f"kernel: inference settings from {source}: {infer_summary(infer_cfg)}")
    shipped = [Path(m["checkpoint"]) for m in ensemble["members"]] if ensemble else [checkpoint]
    dims = [check_checkpoint(path, infer_cfg) for path in shipped]  # each loads and describes, as on Kaggle
    if ensemble:
        from .infer.ensemble import check_whitening

        check_whitening(ensemble["whitening"], ensemble["saved"], ensemble["listed"], dims, cfg["ensemble"])
    train_features = _train_features({**cfg, "infer": infer_cfg}, checkpoint) if args.train_features else None
    folders = build(args.out, comp.slug, checkpoint, args.user, infer_cfg, source,
                    download_deps=not args.no_download, python_versions=args.python_version or KAGGLE_PYTHONS,
                    platforms=args.platform or KAGGLE_PLATFORMS, faiss=tuple(args.faiss or ("gpu", "cpu")),
                    train_features=train_features, ensemble=ensemble)
    print(f"kernel: checked {len(shipped)} checkpoint(s) (loaded weights-only, one image described: {dims[0]}-D); "
          f"wrote {', '.join(str(f) for f in folders.values())} with faiss for Python "
          f"{', '.join(args.python_version or KAGGLE_PYTHONS)}; push with `make kernel-push`")
    return 0


def _kernel_infer(cfg: dict, args: argparse.Namespace, checkpoint: Path, slug: str) -> tuple[dict, str]:
    """The kernel's ``infer`` settings and where they come from: the config when one was named (a recipe for
    the kernel's competition, or the run's own), else the checkpoint's saved config. A config written for
    another competition (the toy's 192 px on a GLDv2 checkpoint) is refused."""
    from .config import config_from_saved
    from .model.net import load_checkpoint

    _, payload = load_checkpoint(checkpoint)
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
    from .infer.ensemble import load_whitening, members

    listed = members(cfg)
    path = run_dir(cfg) / "whitening.npz"
    return {"members": [{"run": run, "weight": weight, "checkpoint": Path(cfg["run"]["dir"]) / run / "checkpoint.pt"}
                        for run, weight in listed], "whitening": path, "saved": load_whitening(path), "listed": listed}


def _train_features(cfg: dict, checkpoint: Path) -> dict:
    """The run's train(-clean) descriptors with the checkpoint's own TTA, and their landmark ids."""
    from .competition import load_competition
    from .data.gldv2 import read_train, read_train_clean
    from .infer.features import features, tta_tag
    from .infer.pipeline import run_net

    net, device = run_net(cfg, checkpoint)
    comp = load_competition(cfg["competition"])
    root = cfg["data"]["root"]
    descriptors, ids = features(net, comp, root, "train", run_dir(cfg) / "features", cfg["infer"], device,
                                data_workers(cfg["run"]["workers"]))
    clean = comp.csv_path(root, "train_clean_csv")
    table = read_train_clean(clean) if clean.is_file() else read_train(comp.csv_path(root, "train_csv"))
    labels = table.drop_duplicates("id").set_index("id")["landmark_id"].loc[ids].to_numpy()
    return {"descriptors": descriptors, "ids": ids, "labels": labels, "tta": tta_tag(cfg["infer"])}


def cmd_kernel_dryrun(args: argparse.Namespace) -> int:
    import shutil

    from .atomic import OWNED_MARKER, check_replaceable
    from .competition import load_competition
    from .infer.submission import validate_submission
    from .kernel.run import list_images
    from .kernel.simulate import mount, notebook_python, run_entry

    cfg = _config(args)
    if args.synthetic:
        return _synthetic_dryrun(cfg, args)
    kaggle_dir = Path(args.kaggle)
    if not (kaggle_dir / "kernel" / "entry.py").is_file():
        raise FileNotFoundError(f"{kaggle_dir}/kernel/entry.py does not exist; run `make kernel` first")
    competition_dir = Path(args.competition_dir or load_competition(cfg["competition"]).data_dir(cfg["data"]["root"]))
    work = check_replaceable(args.work, "kernel-dryrun --work")  # only a dry run's own folder is replaced
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / OWNED_MARKER).write_text("a kernel dry run, written by `python -m solution kernel-dryrun`\n")
    root = mount(kaggle_dir, competition_dir, work / "input", args.layout, args.test_images)
    python, env, _ = notebook_python(work / "notebook")
    settings = {"KERNEL_FULL": "1"} if args.full else {}
    if args.time_limit:
        settings["KERNEL_TIME_LIMIT_S"] = str(args.time_limit)
    started = time.perf_counter()
    result = run_entry(python, env, kaggle_dir / "kernel" / "entry.py", root, work / "working", settings,
                       capture=False)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise ConfigError(f"the kernel exited {result.returncode} after {seconds:.0f}s (its error line is above)")
    submission = work / "working" / "submission.csv"
    data = next(p for p in root.rglob("sample_submission.csv")).parent
    test_ids = list_images(data / "test")[0]
    problems = validate_submission(submission, test_ids, list_images(data / "index")[0])
    print(f"kernel-dryrun: the kernel ran in {seconds:.0f}s ({args.layout} layout, "
          f"{len(test_ids)} test images); {submission}: "
          f"{'valid' if not problems else '; '.join(problems[:3])}")
    return 1 if problems else 0


def _synthetic_dryrun(cfg: dict, args: argparse.Namespace) -> int:
    from .kernel.contract import infer_summary
    from .kernel.synthetic import run_synthetic

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


def cmd_kaggle(args: argparse.Namespace) -> int:
    from . import kaggle_api

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


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .competition import load_competition
    from .data.preprocess import preprocess

    cfg = _config(args)
    comp = load_competition(cfg["competition"])
    src = comp.data_dir(cfg["data"]["root"])
    cache_root = Path(cfg["data"]["root"]) / f"cache{args.size}"
    totals = preprocess(src, cache_root / comp.data["dir"], args.splits, args.size, args.workers)
    print(f"preprocess: {totals['written']} resized, {totals['skipped']} already cached, {totals['unreadable']} "
          f"unreadable; use data.root={cache_root}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .infer.ablation import ablate, table

    result = ablate(_config(args), tuple(args.skip or ()))
    print(table(result))
    print(f"ablate: best on Public: {result['best_on_public']}; wrote {result['path']}")
    return 0


def cmd_ablate_heads(args: argparse.Namespace) -> int:
    from .train.head_ablation import REFERENCE, VARIANTS, ablate_heads

    cfg = _config(args)
    unknown = [v for v in args.variants or [] if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown head variant '{unknown[0]}'; choose from {', '.join(VARIANTS)}")
    if args.variants and set(args.variants) <= {REFERENCE}:
        raise ConfigError(f"--variants {' '.join(args.variants)}: REMAP always runs and is compared with the others; "
                          f"name at least one other ({', '.join(v for v in VARIANTS if v != REFERENCE)})")
    started = time.perf_counter()
    result = ablate_heads(cfg, args.variants or list(VARIANTS), args.seeds or [cfg["run"]["seed"]])
    print(result["path"].read_text().rstrip())
    print(f"ablate-heads: {len(result['rows'])} heads x {len(result['seeds'])} seed(s) in "
          f"{time.perf_counter() - started:.0f}s; wrote {result['path']} and heads.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train.loop import train

    cfg = _config(args)
    started = time.perf_counter()
    with run_lock(run_dir(cfg), "train"):
        result = train(cfg)
    state = "already finished" if result["finished"] else f"trained in {time.perf_counter() - started:.0f}s"
    print(f"train: {state}; test mAP@100 {_before_after(result)}; "
          f"wrote {result['checkpoint']} and {run_dir(cfg) / 'metrics.csv'}")
    if cfg["train"]["transfer_check"] and (run_dir(cfg) / "initial.pt").is_file():
        from .infer.transfer import summary_line, transfer_check

        print(f"train: {summary_line(transfer_check(cfg, Path(cfg['data']['root']) / 'photos'))}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from .infer.transfer import summary_line, transfer_check

    cfg = _config(args)
    result = transfer_check(cfg, args.photos or Path(cfg["data"]["root"]) / "photos")
    print(f"transfer: {summary_line(result)}; wrote {result['path']}")
    return 0


def _before_after(summary: dict) -> str:
    """``before 0.31 [..] -> after 0.55 [..], gain +0.24 [..]``: intervals are 95% bootstrap over queries."""
    from .metrics import format_interval

    def one(when: str) -> str:
        value = summary.get(f"map_{when}")
        if value is None:
            return "n/a"
        ci = summary.get(f"ci_{when}")
        return format_interval(value, ci) if ci else f"{value:.4f}"

    text = f"before {one('before')} -> after {one('after')}"
    gain = summary.get("gain")
    if gain:
        text += f", gain {format_interval(gain['diff'], (gain['low'], gain['high']), signed=True)} (paired)"
    return text


def cmd_kl(args: argparse.Namespace) -> int:
    import numpy as np

    from .competition import load_competition
    from .model.net import build_net, load_checkpoint, save_checkpoint
    from .runtime import resolve_device
    from .train.initialise import fit_region_weights
    from .train.tuples import load_train_set

    cfg = _config(args)
    out = run_dir(cfg)
    checkpoint = out / "checkpoint.pt"
    net, state = load_checkpoint(checkpoint) if checkpoint.is_file() else (build_net(cfg["model"]), {"epoch": 0})
    if not hasattr(net.head, "set_region_weights"):
        raise ConfigError(f"head '{net.meta['head']}' has no region weights; KL estimation is for model.head=remap")
    device = resolve_device(cfg["run"]["device"])
    net.to(device)
    comp = load_competition(cfg["competition"])
    train_set = load_train_set(comp, cfg["data"]["root"], cfg["data"]["train_list"])
    started = time.perf_counter()
    with run_lock(out, "kl"):
        fit_region_weights(net, train_set.paths, train_set.labels, cfg["model"]["kl"], device,
                           data_workers(cfg["run"]["workers"]), np.random.default_rng([cfg["run"]["seed"], 7]),
                           out / "plots")
        save_checkpoint(checkpoint, net, **{k: v for k, v in state.items() if k not in ("meta", "state_dict")})
    print(f"kl: region weights estimated in {time.perf_counter() - started:.0f}s; wrote {checkpoint}, "
          f"{out / 'plots' / 'kl_heatmap.png'} and {out / 'plots' / 'kl_regions.png'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .data.datasets import target_size
    from .model.export import export_torchscript
    from .model.net import load_checkpoint

    cfg = _config(args)
    net, _ = load_checkpoint(run_dir(cfg) / "checkpoint.pt")
    longest = cfg["infer"]["image_size"]
    shapes = args.size or [f"{h}x{w}" for w, h in {target_size(w, h, longest) for w, h in ((4, 3), (3, 4), (1, 1))}]
    sizes = [_size(shape) for shape in shapes]  # all checked before any is written
    written = []
    for height, width in sizes:
        written.append(export_torchscript(net, run_dir(cfg) / "export" / f"model-{height}x{width}.pt", height, width))
    print(f"export: wrote {len(written)} TorchScript models to {written[0].parent}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with run_lock(run_dir(cfg), "ensemble"):
        _ensemble(cfg, args.out)
    return 0


def _ensemble(cfg: dict, out: str) -> dict:
    from .infer.ensemble import run_ensemble
    from .metrics import format_interval

    result = run_ensemble(cfg, out)
    print(f"ensemble: {len(result['members'])} members, {result['dim']}-D after whitening on {result['whiten_on']} "
          f"(whiten_dim {result['whiten_dim']}); wrote {result['submission']} ({result['rows']} rows, validated)")
    if "ensemble" in result:
        rows = [("ensemble", result["ensemble"])] + [(f"{n} alone", p) for n, p in result["alone"].items()]
        print("| descriptor | Public [95% CI] | Private [95% CI] | all [95% CI] |\n|---|---|---|---|")
        for name, parts in rows:
            print(f"| {name} | " + " | ".join(format_interval(parts[k]["map"], parts[k]["ci"])
                                             for k in ("Public", "Private", "all")) + " |")
        diff = result["minus_best"]["all"]
        verdict = "a gain: the interval excludes 0" if diff["low"] > 0 else (
            "a loss" if diff["high"] < 0 else "a tie: the interval contains 0")
        print(f"ensemble minus its best member on Public ({result['best_member']}), all queries: "
              f"{format_interval(diff['diff'], (diff['low'], diff['high']), signed=True)} ({verdict})")
    print(f"ensemble: wrote {result['path']}")
    result["scores"] = {k: v["map"] for k, v in result.get("ensemble", {}).items()}
    return result


def cmd_submit(args: argparse.Namespace) -> int:
    from .infer.submit import make_submission

    cfg = _config(args)
    if args.kaggle:
        from .competition import load_competition

        comp = load_competition(cfg["competition"])
        if comp.kind == "code":
            raise ConfigError(f"'{comp.slug}' is a code competition: Kaggle scores a kernel version, not a CSV; "
                              "run `make kernel CONFIG=... CHECKPOINT=...`, `make kernel-push`, then "
                              "`make submit-kaggle KERNEL_VERSION=N`")
    with run_lock(run_dir(cfg), "submit"):
        if cfg["ensemble"]["members"]:  # an ensemble YAML: `make submit CONFIG=<it>` runs the ensemble stage
            result = _ensemble(cfg, args.out)
        else:
            result = make_submission(cfg, args.out)
    scores = " ".join(f"{k}={v:.4f}" for k, v in result["scores"].items()) or "no ground truth to score"
    print(f"submit: wrote {result['submission']} ({result['rows']} rows, validated); mAP@100 {scores}")
    if args.kaggle:
        from . import kaggle_api
        from .competition import load_competition

        slug = load_competition(cfg["competition"]).slug
        message = f"run {cfg['run']['name']} ({args.config}); local mAP@100 {scores}"
        try:
            kaggle_api.submit(slug, result["submission"], message)
        except kaggle_api.KaggleError as exc:
            print(f"error: {exc}; the submission stays at {result['submission']}", file=sys.stderr)
            return 2
        print(f"submit: uploaded {result['submission']} to {slug} with message '{message}'")
    return 0


def _competition_files(slug: str, data_root: str):
    from .competition import load_competition
    from .data.gldv2 import read_ids

    comp = load_competition(slug)
    return comp, read_ids(comp.csv_path(data_root, "test_csv")), read_ids(comp.csv_path(data_root, "index_csv"))


def cmd_validate(args: argparse.Namespace) -> int:
    from .infer.submission import validate_submission

    comp, test_ids, index_ids = _competition_files(args.competition, args.data_root)
    problems = validate_submission(args.submission, test_ids, index_ids, comp.submission["max_predictions"])
    for line in problems:
        print(f"invalid: {line}", file=sys.stderr)
    if not problems:
        print(f"valid: {args.submission} ({len(test_ids)} test ids)")
    return 1 if problems else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.gldv2 import read_solution
    from .infer.submission import submission_rankings, validate_submission
    from .metrics import format_interval, paired_bootstrap, score_with_intervals

    comp, test_ids, index_ids = _competition_files(args.competition, args.data_root)
    solution = read_solution(comp.csv_path(args.data_root, "solution_csv"))
    submissions = [args.submission] + ([args.against] if args.against else [])
    for path in submissions:
        problems = validate_submission(path, test_ids, index_ids, comp.submission["max_predictions"])
        if problems and not args.force:
            for line in problems:
                print(f"invalid: {line}", file=sys.stderr)
            print(f"error: {path} is not a valid submission ({len(problems)} problems above); Kaggle would "
                  "reject it. --force scores it anyway", file=sys.stderr)
            return 1
    k = comp.metric["k"]
    scored = [score_with_intervals(submission_rankings(path), solution, k) for path in submissions]
    parts = scored[0]
    result = {name: part["map"] for name, part in parts.items()}
    result["ci95"] = {name: part["ci"] for name, part in parts.items()}
    result["queries"] = {name: part["queries"] for name, part in parts.items()}
    if args.against:
        result["minus_against"] = {name: paired_bootstrap(part["aps"], scored[1][name]["aps"])
                                   for name, part in parts.items()}
    if args.json:
        print(json.dumps(result))
        return 0
    for name, part in parts.items():
        line = f"{name} mAP@{k}={format_interval(part['map'], part['ci'])} over {part['queries']} queries"
        if args.against:
            diff = result["minus_against"][name]
            verdict = "the interval excludes 0" if diff["excludes_zero"] else "a tie: the interval contains 0"
            line += (f"; minus {Path(args.against).name}: "
                     f"{format_interval(diff['diff'], (diff['low'], diff['high']), signed=True)} ({verdict})")
        print(line)
    print("intervals: 95% percentile bootstrap over queries (10,000 resamples)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    runners = {
        "model": lambda: bench.bench_model(args.backbones, args.height, args.width, args.batch, args.repeats),
        "train": lambda: bench.bench_train(load_config(args.config, args.set), args.steps),
        "search": lambda: bench.bench_search(args.index_size, args.queries),
        "extract": lambda: bench.bench_extract(load_config(args.config, args.set), args.images),
        "scale": lambda: bench.bench_scale(args.scale_index, args.scale_queries, args.dim, args.dtype,
                                           dba_slice=args.dba_slice),
        "decode": lambda: bench.bench_decode(args.decode_images),
    }
    # `scale` takes many minutes and gigabytes: only when named.
    for section in args.sections or [s for s in runners if s != "scale"]:
        if section not in runners:
            raise ConfigError(f"unknown bench section '{section}'; available: {', '.join(runners)}")
        with bench.SectionMemory() as memory:
            rows = runners[section]()
        # the section's own report where it has one (train: the trainer's device); search runs where faiss does
        device = rows[0].get("device") if rows else None
        device = device or ("cuda" if section in ("search", "scale") and bench.faiss_gpus() else "cpu")
        out = bench.write_results(section, rows, args.out, memory, device)
        print(bench.format_table(rows))
        cuda = f", peak CUDA {memory.cuda_peak_mb:.0f} MB" if memory.cuda_peak_mb else ""
        print(f"bench {section} on {device}: section peak RSS {memory.peak_mb:.0f} MB{cuda}; wrote {out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .train.budget import GPUS, TABLE_HEADER, plan_recipe, plan_table

    cfg = _config(args)
    gpus = args.gpus or cfg["hardware"]["gpus"]
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, not {gpus}")
    names = [args.gpu] if args.gpu else list(GPUS)
    measured: dict = {}
    plans = [plan_recipe(cfg, name, gpus, measured) for name in names]
    print("\n".join([*TABLE_HEADER, *plan_table(Path(args.config).stem, plans)]))
    named = cfg["hardware"]["gpu"]
    for plan in plans:
        if plan.gpu == named and not plan.fits_card:
            print(f"plan: {args.config} does not fit the {named} its hardware.gpu names: lower "
                  "train.tuples_per_forward, train.image_size or infer.batch_size", file=sys.stderr)
            return 1
    return 0


def cmd_gpu_verify(args: argparse.Namespace) -> int:
    from .gpu_verify import RECIPES, run

    report, ok = run(tuple(args.recipes or RECIPES))
    print(report)
    return 0 if ok else 1


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from .gpu_check import run

    try:
        print(run())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m solution", description=__doc__)
    _add_common_args(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    _add_common_args(common, argparse.SUPPRESS)  # before or after the stage's name, without resetting it

    def stage(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = stage("data", help="fetch or generate a competition's data")
    _add_config_args(p)
    p.add_argument("--competition", help="slug (default: the config's)")
    p.add_argument("--size", choices=["default", "tiny"], help="toy set size (default: data.toy_size)")
    p.add_argument("--splits", nargs="+", default=["index", "test"], choices=["train", "index", "test"],
                   help="GLDv2 splits to download (default: index test)")
    p.add_argument("--shards", help="GLDv2 shard subset, e.g. 0-9 or 0-4,7 (default: all)")
    p.add_argument("--train-clean", action="store_true", help="keep only train_clean.csv's train images")
    p.add_argument("--workers", type=whole(1), default=6, help="parallel shard downloads")
    p.add_argument("--keep-tars", action="store_true", help="keep the verified tars after extraction")
    p.add_argument("--files", nargs="+", help="Kaggle competitions: only these files (default: everything)")
    p.set_defaults(func=cmd_data)

    p = stage("viz", help="pictures: data (contact sheet) or retrieval (queries beside their hits)")
    p.add_argument("kind", choices=["data", "retrieval"])
    _add_config_args(p)
    p.add_argument("--queries", type=whole(1), default=8)
    p.add_argument("--topk", type=whole(1), default=8)
    p.set_defaults(func=cmd_viz)

    p = stage("extract", help="descriptors of a split, in shards that resume")
    _add_config_args(p)
    p.add_argument("--split", action="append", choices=["index", "test", "train"],
                   help="repeatable (default: index and test)")
    p.add_argument("--shard", help="i/n: this process's share of the shards (default: torchrun rank / world)")
    p.add_argument("--merge", action="store_true", help="merge and check the shards after extracting")
    p.set_defaults(func=cmd_extract)

    p = stage("evaluate-revisitop", help="mAP on Revisited Oxford/Paris, Easy/Medium/Hard")
    _add_config_args(p)
    p.add_argument("--dataset", required=True, choices=["roxford5k", "rparis6k"])
    p.add_argument("--checkpoint", help="default: the run's checkpoint.pt")
    p.add_argument("--root", default="inputs/revisitop")
    p.add_argument("--download", action="store_true", help="fetch images and ground truth first")
    p.set_defaults(func=cmd_evaluate_revisitop)

    p = stage("kernel", help="wheels, model and kernel folders for an offline Kaggle GPU kernel")
    _add_config_args(p)
    p.set_defaults(config=None)  # no --config: the checkpoint's own inference settings
    p.add_argument("--competition", default="landmark-retrieval-2021")
    p.add_argument("--checkpoint", help="default: the run's checkpoint.pt")
    p.add_argument("--user", default="your-kaggle-name", help="Kaggle user that owns the datasets and kernel")
    p.add_argument("--out", default="kaggle")
    p.add_argument("--no-download", action="store_true",
                   help="only this project's wheel, no faiss (the kernel then stops at once, saying so)")
    p.add_argument("--python-version", action="append",
                   help="a Python to ship faiss for, repeatable (default: 3.11, 3.12 and 3.13; Kaggle's GPU image "
                        "runs 3.12)")
    p.add_argument("--platform", action="append", help="wheel platform tag, repeatable (default: Kaggle's)")
    p.add_argument("--faiss", action="append", choices=["gpu", "cpu"], help="faiss builds to ship (default both)")
    p.add_argument("--train-features", action="store_true",
                   help="also describe train(-clean) and ship it for label re-ranking (a third dataset)")
    p.set_defaults(func=cmd_kernel)

    p = stage("kernel-dryrun", help="run `make kernel`'s output as a Kaggle notebook would: a fake "
                       "/kaggle/input, no network, no faiss or project but what the wheels install")
    _add_config_args(p)
    p.add_argument("--kaggle", default="kaggle", help="the folder `make kernel` wrote")
    p.add_argument("--competition-dir", help="images to mount (default: the config's competition data)")
    p.add_argument("--layout", choices=["old", "new"], default="new", help="Kaggle's mounts: old or current")
    p.add_argument("--test-images", type=whole(1), help="pad the test set to this many images (1129: the public one)")
    p.add_argument("--full", action="store_true", help="KERNEL_FULL=1: the full run even on a small test set")
    p.add_argument("--time-limit", type=number(above=0), help="KERNEL_TIME_LIMIT_S (default: the notebook's 9 hours)")
    p.add_argument("--work", default=DRYRUN_WORK, help="where the input, notebook and output go")
    p.add_argument("--synthetic", choices=["2021"], help="no images: the kernel's path after extraction on "
                   "synthetic descriptors of the 2021 counts, to measure memory and time at the real size")
    p.add_argument("--slice-rows", type=whole(1), default=2000,
                   help="--synthetic: query rows each all-pairs product really computes (the rest projected)")
    p.add_argument("--scale", type=number(above=0, at_most=1), default=1.0,
                   help="--synthetic: a fraction of the real counts")
    p.set_defaults(func=cmd_kernel_dryrun)

    p = stage("kaggle", help="push the kernel's datasets and notebook, or submit a kernel version")
    p.add_argument("action", choices=["push", "submit"])
    p.add_argument("--dir", default="kaggle", help="push: the folder `make kernel` wrote")
    p.add_argument("--wait", type=number(at_least=0), default=1800,
                   help="push: seconds to wait for the datasets to be ready")
    p.add_argument("--competition", default="landmark-retrieval-2021", help="submit: the competition")
    p.add_argument("--kernel", help="submit: owner/slug of the notebook")
    p.add_argument("--version", type=whole(1), help="submit: the notebook version to submit")
    p.add_argument("--message", default="REMAP kernel", help="submit: the submission's description")
    p.set_defaults(func=cmd_kaggle)

    p = stage("preprocess", help="a pre-resized copy of the competition's images (optional cache)")
    _add_config_args(p)
    p.add_argument("--size", type=whole(1), default=512, help="longest side in the cache")
    p.add_argument("--splits", nargs="+", default=["train", "index", "test"], choices=["train", "index", "test"])
    p.add_argument("--workers", type=whole(1), default=os.cpu_count() or 1)
    p.set_defaults(func=cmd_preprocess)

    p = stage("ablate", help="the quality table: each TTA / post-processing step on the same features")
    _add_config_args(p)
    p.add_argument("--skip", nargs="+", metavar="STEP", help="steps to leave out: multiscale flip qe dba diffusion "
                   "superglobal label_rerank")
    p.set_defaults(func=cmd_ablate)

    p = stage("ablate-heads", help="every pooling head fine-tuned at equal budget, compared with REMAP "
                       "through paired bootstrap intervals")
    _add_config_args(p)
    p.add_argument("--variants", nargs="+", metavar="NAME", help="a subset (default: all; REMAP always runs)")
    p.add_argument("--seeds", nargs="+", type=whole(0), metavar="N", help="training seeds (default: run.seed)")
    p.set_defaults(func=cmd_ablate_heads)

    p = stage("transfer", help="real photographs (scikit-image / scikit-learn samples): mAP@100 off the "
                       "shelf against fine-tuned")
    _add_config_args(p)
    p.add_argument("--photos", help="where the photo views go (default: <data.root>/photos)")
    p.set_defaults(func=cmd_transfer)

    p = stage("train", help="fine-tune a descriptor; prints test mAP@100 before and after")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = stage("kl", help="estimate REMAP's KL region weights into the run's checkpoint, with pictures")
    _add_config_args(p)
    p.set_defaults(func=cmd_kl)

    p = stage("export", help="trace the run's checkpoint to TorchScript, one file per input size")
    _add_config_args(p)
    p.add_argument("--size", action="append", metavar="HxW", help="input size (default: the common buckets)")
    p.set_defaults(func=cmd_export)

    p = stage("submit", help="extract, search and write a validated submission")
    _add_config_args(p)
    p.add_argument("--out", default="submissions", help="folder for the CSV")
    p.add_argument("--kaggle", action="store_true", help="also upload it with the kaggle API")
    p.set_defaults(func=cmd_submit)

    p = stage("ensemble", help="several runs' descriptors, weighted, concatenated and PCA-whitened "
                       "(ensemble.members), searched and compared with each member alone")
    _add_config_args(p)
    p.add_argument("--out", default="submissions", help="folder for the CSV")
    p.set_defaults(func=cmd_ensemble)

    p = stage("plan", help="a recipe's steps, peak GPU memory (fake tensors) and projected hours per GPU")
    _add_config_args(p)
    p.add_argument("--gpus", type=whole(1), help="GPUs that share the run (default: the recipe's hardware.gpus)")
    p.add_argument("--gpu", choices=["t4", "v100", "a100", "h100"], help="one GPU type (default: all four)")
    p.set_defaults(func=cmd_plan)

    p = stage("bench", help="measured ratios: heads vs bare backbone, training loop vs bare steps")
    p.add_argument("sections", nargs="*", help="model, train, search, extract, decode; scale (only when named)")
    p.add_argument("--index-size", type=whole(1), default=50_000, help="synthetic index rows (search section)")
    p.add_argument("--queries", type=whole(1), default=5_000, help="synthetic queries (search section)")
    p.add_argument("--config", default="toy", help="experiment YAML for the train section")
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="config overrides (train section)")
    p.add_argument("--steps", type=whole(1), default=12, help="training steps timed (train section)")
    p.add_argument("--images", type=whole(1), default=160, help="index images described (extract section)")
    p.add_argument("--scale-index", type=whole(1), default=1_000_000, help="synthetic index rows (scale section)")
    p.add_argument("--scale-queries", type=whole(1), default=2_000, help="synthetic queries (scale section)")
    p.add_argument("--dim", type=whole(1), default=4096, help="descriptor dimensions (scale section)")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                   help="how the index is stored and searched (scale section; infer.index.dtype)")
    p.add_argument("--dba-slice", type=whole(1), default=100_000, help="rows DBA is timed on, then projected (scale)")
    p.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0", "resnet50"])
    p.add_argument("--height", type=whole(1), default=384)
    p.add_argument("--width", type=whole(1), default=512)
    p.add_argument("--batch", type=whole(1), default=4)
    p.add_argument("--repeats", type=whole(1), default=15, help="interleaved repeats (model section)")
    p.add_argument("--decode-images", type=whole(1), default=200, help="generated JPEGs (decode section)")
    p.add_argument("--out", default="runs/bench")
    p.set_defaults(func=cmd_bench)

    p = stage("gpu-verify", help="the first GPU's script: plan, gpu-check, train + submit + kernel on cuda")
    p.add_argument("--recipes", nargs="+", help="recipes whose plan is checked (default: the GLDv2 recipes)")
    p.set_defaults(func=cmd_gpu_verify)

    p = stage("gpu-check", help="AMP training steps, extraction img/s and faiss on a GPU")
    p.set_defaults(func=cmd_gpu_check)

    for name, func, helptext in (("validate", cmd_validate, "check a submission file"),
                                 ("evaluate", cmd_evaluate, "score a submission against the solution file")):
        p = stage(name, help=helptext)
        p.add_argument("--competition", default="toy")
        p.add_argument("--data-root", default="inputs")
        if name == "evaluate":
            p.add_argument("--submission", required=True)
            p.add_argument("--json", action="store_true")
            p.add_argument("--against", help="a second submission: the paired bootstrap of the difference per part")
            p.add_argument("--force", action="store_true",
                           help="score a file that validate rejects, as the metric would")
        else:
            p.add_argument("submission")
        p.set_defaults(func=func)
    return parser


class UsageError(ConfigError):
    """A command line argparse rejects: reported as one ``error:`` line, like every other user error."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors raised, not printed with a usage block: main() gives them one ``error:`` line."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message}; see `{self.prog} --help`")


def debug_requested(args: argparse.Namespace | None, env: dict | os._Environ = os.environ) -> bool:
    """``--debug`` anywhere on the line, or SOLUTION_DEBUG set to 1, true or yes (any case)."""
    return bool(getattr(args, "debug", False)) or env.get("SOLUTION_DEBUG", "").strip().lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from .runtime import setup_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    interrupted = threading.Event()
    previous = None

    def on_interrupt(signum, frame):
        # Set first: an interrupt that lands where Python swallows exceptions (a DataLoader worker's fork,
        # a __del__) still ends the command as interrupted.
        interrupted.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_interrupt)
    args = None
    try:
        args = _parse(build_parser(), argv)
        setup_logging(args.verbose)
        code = args.func(args)
    except KeyboardInterrupt:
        interrupted.set()
    except user_errors() as exc:
        if debug_requested(args, os.environ) or (args is None and "--debug" in argv):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        print("interrupted: completed files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return code


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    # argparse cannot give a nargs="*" positional the key=value pairs that follow an option
    # (`viz retrieval --config toy a=b`); collect those leftovers as overrides instead.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def one_line(exc: BaseException) -> str:
    """The error's message on one line; an OSError names its path and says what the errno means and what to do."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.errno in OS_HINTS:
        path = exc.filename or "a file"
        return f"{path}: {os.strerror(exc.errno).lower()} ({errno.errorcode[exc.errno]}); {OS_HINTS[exc.errno]}"
    return " ".join(str(exc).split())


OS_HINTS = {
    errno.EROFS: "the filesystem is read-only: point the output (run.dir, --out, infer.index.spill_dir) elsewhere",
    errno.ENOSPC: "the disk is full: free space, or point the output (run.dir, --out, spill_dir) at another disk; "
                  "completed files are kept, so the same command resumes",
    errno.EDQUOT: "the disk quota is used up: free space or point the output at another disk",
    errno.EACCES: "permission denied: check the owner and mode of the file or folder, or choose another",
    errno.EPERM: "operation not permitted: check the owner and mode of the file or folder, or choose another",
    errno.EISDIR: "a folder stands where a file must be written: remove it or choose another path",
    errno.ENOTDIR: "a file stands where a folder must be: remove it or choose another path",
    errno.EEXIST: "it already exists: remove it or choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EMFILE: "too many open files: raise `ulimit -n` or lower run.workers",
}


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a user's mistake, a bad input or a fault of the machine (a full disk, a
    read-only folder), each with a message that names the file or key and the fix: they end in one ``error:``
    line. Anything else is a bug and keeps its traceback."""
    from .atomic import FolderNotOurs, RunBusy
    from .data.gldv2 import DataError
    from .data.images import ImageLoadError
    from .data.revisitop import UnsafePickle
    from .infer.features import CacheError, MergeError
    from .infer.submission import SubmissionError
    from .kaggle_api import KaggleError
    from .kernel.contract import KernelError
    from .model.backbone import WeightError
    from .train.distributed import RankFailed
    from .train.loop import TrainingDiverged

    return (ConfigError, RankFailed, DataError, ImageLoadError, SubmissionError, WeightError, OSError, MergeError,
            CacheError, KaggleError, KernelError, UnsafePickle, TrainingDiverged, FolderNotOurs, RunBusy)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
