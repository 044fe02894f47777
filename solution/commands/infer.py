"""Stages that describe, search, write and score: extract, submit, ensemble, ablate, validate, evaluate
and the Revisited Oxford/Paris evaluation.

Each ``cmd_*`` is registered with ``@stage``, its arguments beside it; it loads the config and calls
the package's own functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..atomic import run_lock
from ..config import ConfigError, run_dir
from ..runtime import data_workers
from .registry import arg, config_of, stage, whole, words_apart


@stage("extract", "descriptors of a split, in shards that resume",
       arg("--split", action="append", choices=["index", "test", "train", "val"],
           help="repeatable (default: index and test)"),
       arg("--shard", help="i/n: this process's share of the shards (default: torchrun rank / world)"),
       arg("--merge", action="store_true", help="merge and check the shards after extracting"))
def cmd_extract(args: argparse.Namespace) -> int:
    from ..competition import load_competition
    from ..distributed import Dist, barrier, init_distributed, shutdown
    from ..infer.features import extract_split, merge_split, split_ids
    from ..infer.pipeline import run_net

    cfg = config_of(args)
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


def _shard(text: str) -> tuple[int, int]:
    """``--shard i/n`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: want i/n, e.g. --shard 0/4 (the first of four)") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: want i/n with 0 <= i < n")
    return index, count


@stage("submit", "extract, search and write a validated submission",
       arg("--out", default="submissions", help="folder for the CSV"),
       arg("--kaggle", action="store_true", help="also upload it with the kaggle API"))
def cmd_submit(args: argparse.Namespace) -> int:
    from ..infer.submit import make_submission

    cfg = config_of(args)
    if args.kaggle:
        from ..competition import load_competition

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
    if result.get("intervals"):
        from ..results import write_result
        from ..train.report import submit_report

        write_result(run_dir(cfg) / "submit.json", "submit", submit_report(result, cfg), cfg)
    if args.kaggle:
        from .. import kaggle_api
        from ..competition import load_competition

        slug = load_competition(cfg["competition"]).slug
        message = f"run {cfg['run']['name']} ({args.config}); local mAP@100 {scores}"
        try:
            kaggle_api.submit(slug, result["submission"], message)
        except kaggle_api.KaggleError as exc:
            print(f"error: {exc}; the submission stays at {result['submission']}", file=sys.stderr)
            return 2
        print(f"submit: uploaded {result['submission']} to {slug} with message '{message}'")
    return 0


@stage("ensemble", "several runs' descriptors, weighted, concatenated and PCA-whitened "
                       "(ensemble.members), searched and compared with each member alone",
       arg("--out", default="submissions", help="folder for the CSV"))
def cmd_ensemble(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    with run_lock(run_dir(cfg), "ensemble"):
        _ensemble(cfg, args.out)
    return 0


def _ensemble(cfg: dict, out: str) -> dict:
    from ..studies.ensemble import run_ensemble, table

    result = run_ensemble(cfg, out)
    print(f"ensemble: {len(result['members'])} members, {result['dim']}-D after whitening on {result['whiten_on']} "
          f"(whiten_dim {result['whiten_dim']}); wrote {result['submission']} ({result['rows_written']} rows, "
          "validated)")
    if "rows" in result:
        print(table(result))
    print(f"ensemble: wrote {result['path']}")
    return {**result, "rows": result["rows_written"]}


@stage("ablate", "the quality table: each TTA / post-processing step on the same features",
       arg("--skip", nargs="+", metavar="STEP", help="steps to leave out: multiscale flip qe dba diffusion "
           "superglobal label_rerank"))
def cmd_ablate(args: argparse.Namespace) -> int:
    from ..studies.ablation import ablate, table

    result = ablate(config_of(args), tuple(args.skip or ()))
    print(table(result))
    print(f"ablate: selected on {result['selected_on']}; best: {result['best']}; wrote {result['path']}")
    return 0


@stage("tune", "QE / DBA / label re-ranking settings chosen on the validation queries, test reported",
       arg("--grid", nargs="+", metavar="STEP.KEY=V1,V2", help="values to try (default: solution/studies/tuning.py's "
           "GRID), e.g. qe.n=1,2,3 dba.k=2,3,5"),
       arg("--passes", type=whole(1), default=1, help="rounds of one-key-at-a-time search"))
def cmd_tune(args: argparse.Namespace) -> int:
    from ..studies.tuning import parse_grid, table, tune

    cfg = config_of(args)
    with run_lock(run_dir(cfg), "tune"):
        result = tune(cfg, parse_grid(args.grid), args.passes)
    print(table(result))
    chosen = " ".join(f"infer.{k}={v}" for k, v in result["chosen"].items())
    verdict = (f"adopt it: {chosen}" if result["adopt"] else
               f"its best ({chosen}) ties the config's settings, which stay")
    print(f"tune: selected on {result['selected_on']}; {verdict}; wrote {result['path']}")
    return 0


def _competition_files(slug: str, data_root: str):
    from ..competition import load_competition
    from ..data.gldv2 import read_ids

    comp = load_competition(slug)
    return comp, read_ids(comp.csv_path(data_root, "test_csv")), read_ids(comp.csv_path(data_root, "index_csv"))


@stage("validate", "check a submission file",
       arg("--competition", default="toy"),
       arg("--data-root", default="inputs"),
       arg("submission"),
       config=False)
def cmd_validate(args: argparse.Namespace) -> int:
    from ..infer.submission import validate_submission

    comp, test_ids, index_ids = _competition_files(args.competition, args.data_root)
    problems = validate_submission(args.submission, test_ids, index_ids, comp.submission["max_predictions"])
    for line in problems:
        print(f"invalid: {line}", file=sys.stderr)
    if not problems:
        print(f"valid: {args.submission} ({len(test_ids)} test ids)")
    return 1 if problems else 0


@stage("evaluate", "score a submission against the solution file",
       arg("--competition", default="toy"),
       arg("--data-root", default="inputs"),
       arg("--submission", required=True),
       arg("--json", action="store_true"),
       arg("--against", help="a second submission: the paired bootstrap of the difference per part"),
       arg("--force", action="store_true", help="score a file that validate rejects, as the metric would"),
       config=False)
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data.gldv2 import read_solution
    from ..infer.submission import submission_rankings, validate_submission
    from ..metrics import format_interval, paired_bootstrap, score_with_intervals

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


@stage("evaluate-revisitop", "mAP on Revisited Oxford/Paris, Easy/Medium/Hard",
       arg("--dataset", required=True, choices=["roxford5k", "rparis6k"]),
       arg("--checkpoint", help="default: the run's checkpoint.pt"),
       arg("--root", default="inputs/revisitop"),
       arg("--download", action="store_true", help="fetch images and ground truth first"))
def cmd_evaluate_revisitop(args: argparse.Namespace) -> int:
    from ..data.revisitop import download
    from ..infer.pipeline import run_net
    from ..infer.revisitop_eval import evaluate_revisitop

    cfg = config_of(args)
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


@stage("index", "describe a folder of your own images with the run's checkpoint, once (cached), for `query`",
       arg("--images", required=True, help="the folder (any depth; jpg, png, webp, ...)"),
       arg("--checkpoint", help="default: the run's checkpoint.pt"))
def cmd_index(args: argparse.Namespace) -> int:
    from ..infer.folder_search import build_gallery, gallery_features
    from ..infer.pipeline import run_net

    cfg = config_of(args)
    gallery = build_gallery(cfg, args.images)
    net, device = run_net(cfg, args.checkpoint)
    rows = gallery_features(net, gallery, cfg, device)
    print(f"index: {len(gallery.ids)} images of {gallery.folder} described ({rows.shape[1]}-D, cached under "
          f"{gallery.root}); ask with `python -m solution query IMAGE... --config {args.config}`")
    return 0


@stage("query", "the top hits for each image among the folder `index` described, with scores, and a picture: "
                "query IMAGE... [key=value ...]",
       arg("--images", dest="folder", help="the folder to search (default: the last one `index` described)"),
       arg("--top", type=whole(1), default=10, help="hits per query"),
       arg("--json", action="store_true", help="print JSON instead of lines"),
       arg("--checkpoint", help="default: the run's checkpoint.pt"))
def cmd_query(args: argparse.Namespace) -> int:
    from ..infer.folder_search import build_gallery, last_gallery, query
    from ..infer.pipeline import run_net
    from ..viz import QUERY_FRAME, tile_rows

    # a word that is an existing file is an image even with an '=' in its name
    images = [Path(w) for w in words_apart(args, lambda word: "=" in word and not Path(word).is_file())]
    if not images:
        raise ConfigError("query: give one or more image files, e.g. `python -m solution query photo.jpg --top 5`")
    cfg = config_of(args)
    gallery = build_gallery(cfg, args.folder or last_gallery(cfg))
    net, device = run_net(cfg, args.checkpoint)
    answers = query(net, gallery, images, cfg, device, args.top)
    picture = tile_rows([[("query", Path(a["query"]), QUERY_FRAME)] +
                         [(f"{h['rank']}: {h['score']:.2f}", Path(h["path"]), None) for h in a["hits"]]
                         for a in answers], run_dir(cfg) / "plots" / "query.png", args.top)
    if args.json:
        print(json.dumps({"folder": str(gallery.folder), "picture": str(picture), "queries": answers}, indent=1))
        return 0
    for answer in answers:
        print(f"query {answer['query']}:")
        for hit in answer["hits"]:
            print(f"  {hit['rank']:>3}  {hit['score']:.3f}  {hit['path']}")  # a cosine, not an mAP: 3 places
    print(f"query: searched {len(gallery.ids)} images of {gallery.folder}; picture {picture}")
    return 0
