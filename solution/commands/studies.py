"""Stages that measure the descriptor without training it: the head x map-size table and the cap count."""

from __future__ import annotations

import argparse
import time

from ..config import run_dir
from ..results import write_result
from .registry import arg, config_of, stage, whole


@stage("geometry", "every head off the shelf at several input sizes (map sizes) on the validation queries",
       arg("--sizes", nargs="+", type=whole(32), default=[192, 256, 384], metavar="PX",
           help="longest sides to describe at (default: 192 256 384)"),
       arg("--heads", nargs="+", metavar="NAME", help="a subset of mac rmac remap remap-gem gem (default: all)"),
       arg("--whiten-images", type=whole(2), default=1000, help="training images each whitening is fitted on"))
def cmd_geometry(args: argparse.Namespace) -> int:
    from ..studies.geometry import HEADS, geometry_study, table

    cfg = config_of(args)
    started = time.perf_counter()
    out = geometry_study(cfg, args.sizes, args.heads or list(HEADS), args.whiten_images)
    path = write_result(run_dir(cfg) / "geometry.json", "geometry", out, cfg)
    print(table(out))
    print(f"geometry: {len(out['heads'])} heads x {len(out['sizes'])} sizes in {time.perf_counter() - started:.0f}s; "
          f"wrote {path}")
    return 0


@stage("saturation", "share of region maxima at the final activation's cap (ReLU6), per tapped layer",
       arg("--sizes", nargs="+", type=whole(32), metavar="PX", help="input sizes (default: train and infer size)"),
       arg("--images", type=whole(1), default=300, help="index images sampled (default: 300)"),
       arg("--checkpoint", nargs="*", default=[], metavar="PATH", help="fine-tuned checkpoints to count too"))
def cmd_saturation(args: argparse.Namespace) -> int:
    from ..studies.saturation import saturation_study, table

    cfg = config_of(args)
    sizes = args.sizes or sorted({cfg["train"]["image_size"], cfg["infer"]["image_size"]})
    out = saturation_study(cfg, sizes, args.images, args.checkpoint)
    path = write_result(run_dir(cfg) / "saturation.json", "saturation", out, cfg)
    print(table(out))
    print(f"saturation: {out['images']} images at {', '.join(f'{s} px' for s in sizes)}; wrote {path}")
    return 0
