"""Stages built on training: train, the KL region weights, export, the transfer check, the head
comparison and the GPU plan.

Each ``cmd_*`` is registered with ``@stage``, its arguments beside it; it loads the config and calls
the package's own functions."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..atomic import first_rank, run_lock
from ..config import ConfigError, run_dir
from ..runtime import data_workers
from .registry import arg, config_of, stage, whole


@stage("train", "fine-tune a descriptor; prints test mAP@100 before and after")
def cmd_train(args: argparse.Namespace) -> int:
    from ..train.loop import train
    from ..train.selection import selection_words

    cfg = config_of(args)
    started = time.perf_counter()
    with run_lock(run_dir(cfg), "train"):
        result = train(cfg)
    if result["finished"]:  # nothing was trained or written: say so, and keep the run's own train.json
        print(f"train: already finished; test mAP@100 {_before_after(result)}; nothing written ({result['checkpoint']} "
              "is as it was; train.epochs=N continues it)")
        return 0
    print(f"train: trained in {time.perf_counter() - started:.0f}s; test mAP@100 {_before_after(result)}; "
          f"wrote {result['checkpoint']} and {run_dir(cfg) / 'metrics.csv'}")
    selected = selection_words(result.get("selected"), cfg["train"])
    print(f"train: selected on {selected}")
    if result.get("weights_moved"):
        from ..train.region_weights import moved_line

        print(f"train: REMAP region weights moved from their KL start (change over the layer's mean start weight): "
              f"{moved_line(result['weights_moved'])}; wrote {run_dir(cfg) / 'region_weights.json'} and "
              f"{run_dir(cfg) / 'plots' / 'region_weights.png'}")
    transfer, writes = None, first_rank()  # under torchrun, rank 0 alone checks and writes
    # The check guards a rendered competition against fine-tuning that hurts real photographs; a folder
    # competition's own test queries are the user's photographs already (and may be these very ones).
    from ..competition import load_competition

    own_photos = load_competition(cfg["competition"]).source == "folder"
    if cfg["train"]["transfer_check"] and writes and not own_photos and (run_dir(cfg) / "initial.pt").is_file():
        from ..studies.transfer import summary_line, transfer_check

        transfer = transfer_check(cfg, Path(cfg["data"]["root"]) / "photos")
        print(f"train: {summary_line(transfer)}")
    if result.get("map_after") is not None and writes:
        from ..results import write_result
        from ..train.report import train_report

        path = write_result(run_dir(cfg) / "train.json", "train", train_report(result, cfg, selected, transfer), cfg)
        print(f"train: wrote {path} (file it in the docs with `make results ADD={path}`)")
    return 0


def _before_after(summary: dict) -> str:
    """``before 0.31 [..] -> after 0.55 [..], gain +0.24 [..]``: intervals are 95% bootstrap over queries."""
    from ..metrics import format_interval

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


@stage("transfer", "real photographs (scikit-image / scikit-learn samples): mAP@100 off the "
                       "shelf against fine-tuned",
       arg("--photos", help="where the photo views go (default: <data.root>/photos)"))
def cmd_transfer(args: argparse.Namespace) -> int:
    from ..studies.transfer import summary_line, transfer_check

    cfg = config_of(args)
    result = transfer_check(cfg, args.photos or Path(cfg["data"]["root"]) / "photos")
    print(f"transfer: {summary_line(result)}; wrote {result['path']}")
    return 0


@stage("kl", "estimate REMAP's KL region weights into the run's checkpoint, with pictures")
def cmd_kl(args: argparse.Namespace) -> int:
    import numpy as np

    from ..competition import load_competition
    from ..model.net import build_net, load_checkpoint, save_checkpoint
    from ..runtime import resolve_device
    from ..train.initialise import fit_region_weights, kl_image_size
    from ..train.tuples import load_train_set

    cfg = config_of(args)
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
        fit_region_weights(net, train_set.paths, train_set.labels, cfg["model"]["kl"], kl_image_size(cfg), device,
                           data_workers(cfg["run"]["workers"]), np.random.default_rng([cfg["run"]["seed"], 7]),
                           out / "plots")
        save_checkpoint(checkpoint, net, **{k: v for k, v in state.items() if k not in ("meta", "state_dict")})
    print(f"kl: region weights estimated in {time.perf_counter() - started:.0f}s; wrote {checkpoint}, "
          f"{out / 'plots' / 'kl_heatmap.png'} and {out / 'plots' / 'kl_regions.png'}")
    return 0


@stage("export", "trace the run's checkpoint to TorchScript, one file per input size",
       arg("--size", action="append", metavar="HxW", help="input size (default: the common buckets)"))
def cmd_export(args: argparse.Namespace) -> int:
    from ..data.datasets import target_size
    from ..model.export import export_torchscript
    from ..model.net import load_checkpoint

    cfg = config_of(args)
    net, _ = load_checkpoint(run_dir(cfg) / "checkpoint.pt")
    longest = cfg["infer"]["image_size"]
    shapes = args.size or [f"{h}x{w}" for w, h in {target_size(w, h, longest) for w, h in ((4, 3), (3, 4), (1, 1))}]
    sizes = [_size(shape) for shape in shapes]  # all checked before any is written
    written = []
    for height, width in sizes:
        written.append(export_torchscript(net, run_dir(cfg) / "export" / f"model-{height}x{width}.pt", height, width))
    print(f"export: wrote {len(written)} TorchScript models to {written[0].parent}")
    return 0


EXPORT_SIDES = (32, 4096)  # one cell of the final map .. past any bucket this project resizes to


def _size(text: str) -> tuple[int, int]:
    """``--size HxW`` -> (height, width), each within EXPORT_SIDES."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text}: want HxW in pixels, e.g. --size 384x512") from None
    if not (EXPORT_SIDES[0] <= height <= EXPORT_SIDES[1] and EXPORT_SIDES[0] <= width <= EXPORT_SIDES[1]):
        raise ConfigError(f"--size {text}: each side must be {EXPORT_SIDES[0]} to {EXPORT_SIDES[1]} pixels (the "
                          "traced example is held in memory whole; images are resized to their bucket first)")
    return height, width


@stage("ablate-heads", "every pooling head fine-tuned at equal budget, compared with REMAP "
                       "through paired bootstrap intervals",
       arg("--variants", nargs="+", metavar="NAME", help="a subset (default: all; REMAP always runs)"),
       arg("--seeds", nargs="+", type=whole(0), metavar="N", help="training seeds (default: run.seed)"))
def cmd_ablate_heads(args: argparse.Namespace) -> int:
    from ..studies.head_ablation import REFERENCE, VARIANTS, ablate_heads

    cfg = config_of(args)
    unknown = [v for v in args.variants or [] if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown head variant '{unknown[0]}'; choose from {', '.join(VARIANTS)}")
    if args.variants and set(args.variants) <= {REFERENCE}:
        raise ConfigError(f"--variants {' '.join(args.variants)}: REMAP always runs and is compared with the others; "
                          f"name at least one other ({', '.join(v for v in VARIANTS if v != REFERENCE)})")
    repeated = sorted({s for s in args.seeds or [] if args.seeds.count(s) > 1})
    if repeated:  # the same seed twice is one run counted as two: its interval would be too narrow
        raise ConfigError(f"--seeds {' '.join(map(str, args.seeds))} repeats {', '.join(map(str, repeated))}; "
                          "name each seed once")
    started = time.perf_counter()
    result = ablate_heads(cfg, args.variants or list(VARIANTS), args.seeds or [cfg["run"]["seed"]])
    print(result["path"].read_text().rstrip())
    print(f"ablate-heads: {len(result['rows'])} heads x {len(result['seeds'])} seed(s) in "
          f"{time.perf_counter() - started:.0f}s; wrote {result['path']} and heads.json")
    return 0


@stage("plan", "a recipe's steps, peak GPU memory (fake tensors) and projected hours per GPU",
       arg("--gpus", type=whole(1), help="GPUs that share the run (default: the recipe's hardware.gpus)"),
       arg("--gpu", choices=["t4", "v100", "a100", "h100"], help="one GPU type (default: all four)"))
def cmd_plan(args: argparse.Namespace) -> int:
    from ..studies.plan import GPUS, TABLE_HEADER, plan_recipe, plan_table

    cfg = config_of(args)
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
