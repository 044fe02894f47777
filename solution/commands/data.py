"""Stages that fetch, generate, cache and picture a competition's data.

Each ``cmd_*`` is registered with ``@stage``, its arguments beside it; it loads the config and calls
the package's own functions."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..config import ConfigError, run_dir
from ..runtime import data_workers
from .registry import arg, config_of, stage, whole


@stage("data", "fetch or generate a competition's data",
       arg("--competition", help="slug (default: the config's)"),
       arg("--size", choices=["default", "tiny"], help="toy set size (default: data.toy_size)"),
       arg("--splits", nargs="+", default=["index", "test"], choices=["train", "index", "test"],
           help="GLDv2 splits to download (default: index test)"),
       arg("--shards", help="GLDv2 shard subset, e.g. 0-9 or 0-4,7 (default: all)"),
       arg("--train-clean", action="store_true", help="keep only train_clean.csv's train images"),
       arg("--workers", type=whole(1), default=6, help="parallel shard downloads"),
       arg("--keep-tars", action="store_true", help="keep the verified tars after extraction"),
       arg("--files", nargs="+", help="Kaggle competitions: only these files (default: everything)"))
def cmd_data(args: argparse.Namespace) -> int:
    from ..competition import load_competition
    from ..data import toy
    from ..viz import data_contact_sheet

    cfg = config_of(args)
    slug = args.competition or cfg["competition"]
    comp = load_competition(slug)
    target = comp.data_dir(cfg["data"]["root"])
    if comp.source == "gldv2":
        from ..data.download import download_gldv2

        started = time.perf_counter()
        counts = download_gldv2(target, args.splits, args.shards, args.workers, args.train_clean, args.keep_tars)
        print(f"data: GLDv2 {' '.join(args.splits)} shards {args.shards or 'all'}: {counts['done']} downloaded "
              f"and verified, {counts['skipped']} already there, in {time.perf_counter() - started:.0f}s; "
              f"images under {target}")
        return 0
    if comp.source == "kaggle":
        from .. import kaggle_api

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


@stage("viz", "pictures: data (contact sheet) or retrieval (queries beside their hits)",
       arg("kind", choices=["data", "retrieval"]),
       arg("--queries", type=whole(1), default=8),
       arg("--topk", type=whole(1), default=8))
def cmd_viz(args: argparse.Namespace) -> int:
    from ..competition import load_competition
    from ..data.gldv2 import read_ids, read_solution
    from ..infer.features import CacheError
    from ..infer.submit import load_ranking
    from ..model.net import file_fingerprint
    from ..viz import data_contact_sheet, retrieval_gallery

    cfg = config_of(args)
    comp = load_competition(cfg["competition"])
    target = comp.data_dir(cfg["data"]["root"])
    if args.kind == "data":
        print(f"viz data: wrote {data_contact_sheet(target, target / 'contact_sheet.png')}")
        return 0
    path = run_dir(cfg) / "ranking.npz"
    ranking = load_ranking(path)
    test_ids = set(read_ids(comp.csv_path(cfg["data"]["root"], "test_csv")))
    if set(ranking[0]) != test_ids:  # made for another test set: its hits would be drawn from the wrong images
        raise CacheError(f"{path} ranks {len(ranking[0])} queries, not this competition's {len(test_ids)} test "
                         "images; run `make submit` again to rewrite it")
    made_by, checkpoint = ranking[3], run_dir(cfg) / "checkpoint.pt"
    if made_by.get("checkpoint") and checkpoint.is_file() and made_by["checkpoint"] != file_fingerprint(checkpoint):
        raise CacheError(f"{path} was made by an earlier {checkpoint} (the run was trained again since); run "
                         "`make submit` again to rewrite it")
    solution_path = comp.csv_path(cfg["data"]["root"], "solution_csv")
    solution = read_solution(solution_path) if solution_path.is_file() else None
    out = retrieval_gallery(target, ranking, run_dir(cfg) / "plots" / "retrieval.png", solution, args.queries,
                            args.topk)
    detail = (f" (ranking of features {made_by.get('features', '?')}, steps "
              f"{'+'.join(made_by.get('steps', [])) or 'none'})" if made_by else "")
    print(f"viz retrieval: wrote {out}{detail}")
    return 0


@stage("preprocess", "a pre-resized copy of the competition's images (optional cache)",
       arg("--size", type=whole(1), default=512, help="longest side in the cache"),
       arg("--splits", nargs="+", choices=["train", "index", "test", "val"],
           help="default: every split folder the competition has (val too, where it has validation queries)"),
       arg("--workers", type=whole(1), default=os.cpu_count() or 1))
def cmd_preprocess(args: argparse.Namespace) -> int:
    from ..competition import load_competition
    from ..data.preprocess import preprocess

    cfg = config_of(args)
    comp = load_competition(cfg["competition"])
    src = comp.data_dir(cfg["data"]["root"])
    cache_root = Path(cfg["data"]["root"]) / f"cache{args.size}"
    splits = args.splits or [split for split in ("train", "index", "test", "val") if (src / split).is_dir()]
    totals = preprocess(src, cache_root / comp.data["dir"], splits, args.size, args.workers)
    print(f"preprocess: {totals['written']} resized, {totals['skipped']} already cached, {totals['unreadable']} "
          f"unreadable; use data.root={cache_root}")
    return 0
