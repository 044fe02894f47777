"""Measurement stages: the benchmarks, the GPU checks and the result tables of the docs.

Each ``cmd_*`` is registered with ``@stage``, its arguments beside it; it loads the config and calls
the package's own functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .registry import arg, config_of, stage, whole, words_apart


@stage("bench", "measured ratios: heads vs bare backbone, training loop vs bare steps: bench [SECTION...] "
                "[key=value ...] (sections: model, train, search, extract, decode, precision; scale and folder "
                "only when named; key=value overrides the --config recipe the train and extract sections run)",
       arg("--index-size", type=whole(1), default=50_000, help="synthetic index rows (search section)"),
       arg("--queries", type=whole(1), default=5_000, help="synthetic queries (search section)"),
       arg("--steps", type=whole(1), default=30, help="training steps timed (train section)"),
       arg("--images", type=whole(1), default=160, help="index images described (extract section)"),
       arg("--scale-index", type=whole(1), default=1_000_000, help="synthetic index rows (scale section)"),
       arg("--scale-queries", type=whole(1), default=2_000, help="synthetic queries (scale section)"),
       arg("--dim", type=whole(1), default=4096, help="descriptor dimensions (scale section)"),
       arg("--dtype", choices=["float16", "float32"], default="float16",
           help="how the index is stored and searched (scale section; infer.index.dtype)"),
       arg("--dba-slice", type=whole(1), default=100_000, help="rows DBA is timed on, then projected (scale)"),
       arg("--backbones", nargs="+", default=["tf_efficientnet_lite0", "resnet50"]),
       arg("--height", type=whole(1), default=384),
       arg("--width", type=whole(1), default=512),
       arg("--batch", type=whole(1), default=4),
       arg("--repeats", type=whole(1), default=15, help="interleaved repeats (model section)"),
       arg("--gemm-size", type=whole(1), default=4096, help="square GEMM that measures the peak (search section)"),
       arg("--decode-images", type=whole(1), default=200, help="generated JPEGs (decode section)"),
       arg("--folder-files", type=whole(1), default=100_000, help="generated JPEGs (folder section)"),
       arg("--folder-labels", type=whole(1), default=10_000, help="label folders they are spread over (folder)"),
       arg("--out", default="runs/bench"))
def cmd_bench(args: argparse.Namespace) -> int:
    from ..studies import bench

    sections = words_apart(args)  # a word with '=' overrides the recipe, as in every stage; any other: a section

    runners = {
        "model": lambda: bench.bench_model(args.backbones, args.height, args.width, args.batch, args.repeats),
        "train": lambda: bench.bench_train(config_of(args), args.steps),
        "search": lambda: bench.bench_search(args.index_size, args.queries, gemm_size=args.gemm_size),
        "extract": lambda: bench.bench_extract(config_of(args), args.images),
        "scale": lambda: bench.bench_scale(args.scale_index, args.scale_queries, args.dim, args.dtype,
                                           dba_slice=args.dba_slice),
        "decode": lambda: bench.bench_decode(args.decode_images),
        "precision": lambda: [bench.half_product_agreement()],
        "folder": lambda: bench.bench_folder(args.folder_files, args.folder_labels, Path(args.out) / "folder"),
    }
    # `scale` and `folder` take many minutes and gigabytes (of memory, of disk): only when named.
    for section in sections or [s for s in runners if s not in ("scale", "folder")]:
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


@stage("gpu-verify", "the first GPU's script: plan, gpu-check, train + submit + kernel on cuda",
       arg("--recipes", nargs="+", help="recipes whose plan is checked (default: the GLDv2 recipes)"),
       config=False)
def cmd_gpu_verify(args: argparse.Namespace) -> int:
    from ..studies.gpu_verify import RECIPES, run

    report, ok = run(tuple(args.recipes or RECIPES))
    print(report)
    return 0 if ok else 1


@stage("gpu-check", "AMP training steps, extraction img/s and faiss on a GPU",
       config=False)
def cmd_gpu_check(args: argparse.Namespace) -> int:
    from ..studies.gpu_check import run

    try:
        print(run())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


@stage("results", "render every result table in README.md and docs/*.md from docs/results/*.json",
       arg("--add", nargs="+", metavar="JSON", help="file these run results under docs/results/ first"),
       arg("--check", action="store_true", help="only report the documents whose tables differ"),
       arg("--reproduces", nargs="+", metavar="JSON", help="check that these run results (runs/<run>/<kind>.json) "
           "print every figure the docs show for them (CI runs it after make train and make submit)"),
       config=False)
def cmd_results(args: argparse.Namespace) -> int:
    from ..results import add_result, render_documents, reproduces
    from ..studies import tables  # noqa: F401 - registers every result kind's table

    if args.check and args.add:
        raise ConfigError("results --check only reports and files nothing: drop --add, or --check")
    if args.reproduces:
        failed = False
        for source in args.reproduces:
            filed, differences = reproduces(source)
            for line in differences:
                print(f"results: {source} does not reproduce {filed.name}: {line}", file=sys.stderr)
            if not differences:
                print(f"results: {source} reproduces every figure of {filed.name}")
            failed = failed or bool(differences)
        if failed:
            print("results: a figure moved; if the change meant it to, file the new run (`make results "
                  "ADD=...`) so the docs show it", file=sys.stderr)
        return 1 if failed else 0
    for source in args.add or ():
        print(f"results: filed {source} as {add_result(source)}")
    changed = render_documents(check=args.check)
    if args.check:
        for doc in changed:
            print(f"results: {doc} differs from its result files; run `make results`", file=sys.stderr)
        return 1 if changed else 0
    print(f"results: regenerated {len(changed)} document(s)" + (f": {', '.join(map(str, changed))}" if changed else ""))
    return 0
