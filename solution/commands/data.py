"""Stages that fetch, generate, cache and picture a competition's data.

Each ``cmd_*`` is registered with ``@stage``, its arguments beside it; it loads the config and calls
the package's own functions."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..atomic import atomic_path
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
    if comp.source == "folder":
        from ..data.folder import build, folder_spec

        stamp = build(target, folder_spec(comp.data, comp.folder, str(comp.folder / "competition.yaml")),
                      data_workers(cfg["run"]["workers"]))
        counts, labels = stamp["counts"], stamp["labels"]
        sheet = data_contact_sheet(target, target / "contact_sheet.png")
        print(f"data: {slug} from {comp.data['images']}: {counts['train']} train images of {labels['train']} labels, "
              f"{counts['index']} index images, {counts['test']} test queries of {labels['test']} held-out labels, "
              f"{counts['val']} validation queries of {labels['val']} others; linked in place under {target} "
              f"(split of {stamp['files']} files; contact sheet {sheet})")
        return 0
    size = args.size or cfg["data"]["toy_size"]
    started = time.perf_counter()
    toy.generate(target, size=size, seed=cfg["data"]["toy_seed"], workers=data_workers(cfg["run"]["workers"]))
    sheet = data_contact_sheet(target, target / "contact_sheet.png")
    print(f"data: wrote the {size} toy competition to {target} in {time.perf_counter() - started:.1f}s "
          f"(contact sheet {sheet})")
    return 0


@stage("new-competition", "a competition of your own images from competition/folder-template.yaml",
       arg("slug", help="its name (a folder under competition/, or under $REMAP_COMPETITIONS when set)"),
       arg("--images", required=True, help="folder of <label>/ folders (or of the files --labels-csv lists)"),
       arg("--labels-csv", help="CSV of path,label, paths relative to --images"),
       arg("--distractors", help="folder of unlabelled images that join the index"),
       config=False)
def cmd_new_competition(args: argparse.Namespace) -> int:
    from ..competition import COMPETITION_ROOT, competition_roots
    from ..config import plain_name

    if not plain_name(args.slug):
        raise ConfigError(f"new-competition: '{args.slug}' is not a plain name (letters, digits, - and _)")
    folder = competition_roots()[0] / args.slug
    if (folder / "competition.yaml").exists():
        raise ConfigError(f"{folder / 'competition.yaml'} exists already; edit it, or choose another name")
    paths = {}
    for key, value in (("images", args.images), ("labels_csv", args.labels_csv), ("distractors", args.distractors)):
        if value is not None:
            path = Path(value).expanduser().resolve()
            if not (path.is_file() if key == "labels_csv" else path.is_dir()):
                raise ConfigError(f"new-competition: --{key.replace('_', '-')} {path} is not a "
                                  f"{'file' if key == 'labels_csv' else 'folder'}")
            paths[key] = str(path)
    text = (COMPETITION_ROOT / "folder-template.yaml").read_text()
    text = text.replace("SLUG", args.slug).replace("TITLE", _yaml_text(f"{args.slug}: images of {paths['images']}"))
    text = text.replace("images: IMAGES", f"images: {_yaml_text(paths['images'])}")
    for key in ("labels_csv", "distractors"):
        if key in paths:
            text = text.replace(f"{key}: null", f"{key}: {_yaml_text(paths[key])}")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "competition.yaml") as tmp:
        tmp.write_text(text)
    print(f"new-competition: wrote {folder / 'competition.yaml'}; next: `make train COMPETITION={args.slug}`, then "
          f"`make submit COMPETITION={args.slug}`")
    return 0


def _yaml_text(value: str) -> str:
    import json

    return json.dumps(value)  # a JSON string is a YAML string: spaces, colons and quotes stay what they are


@stage("example-folder", "real photographs laid out as your own folder would be (<scene>/ folders and "
                          "distractors/), to try new-competition on",
       arg("folder", help="where to write them, e.g. inputs/example-photos"),
       arg("--views", type=whole(2), default=30, help="views of each of the 22 scenes"),
       arg("--distractors", type=whole(0), default=300, help="texture photographs that join the index"),
       config=False)
def cmd_example_folder(args: argparse.Namespace) -> int:
    from ..data.photos import PhotoSet, write_label_folders

    counts = write_label_folders(args.folder, PhotoSet(views=args.views, distractors=args.distractors))
    folder = Path(args.folder)
    print(f"example-folder: {counts['views']} views of {counts['scenes']} scenes in {folder / 'scenes'}, "
          f"{counts['distractors']} distractors in {folder / 'distractors'}; next: `make new-competition "
          f"COMPETITION=photos IMAGES={folder / 'scenes'} DISTRACTORS={folder / 'distractors'}`")
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
