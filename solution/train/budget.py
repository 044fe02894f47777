"""``python -m solution plan``: what a recipe costs on a GPU, measured without one.

- Steps: optimiser steps per epoch and in all, images trained and described (for mining) per epoch, from
  the recipe's counts (``train.tuples_per_step`` is global, so the GPU count changes the time, not the steps).
- Memory: one real training step (the recipe's net, one forward of ``train.tuples_per_forward`` tuples at
  the largest training size square, ``train.loss`` (ArcFace's class centres over the train list's landmarks
  included), backward, Adam's step) and one extraction batch
  (``infer.batch_size`` images at ``infer.image_size`` through the recipe's TTA) run on PyTorch's fake
  tensors, which carry shapes and dtypes but no data, under its memory tracker
  (``torch.distributed._tools.mem_tracker``), with autocast at the GPU's precision. The peak is compared
  with the card's memory after a fixed allowance for the CUDA context and the allocator (:data:`OVERHEAD_GB`).
- Time: FLOPs of the same step and batch from ``torch.utils.flop_counter``, at an assumed sustained rate
  per GPU (:data:`GPUS`, printed with every projection).

CPU autocast keeps a few more operations in float32 than CUDA's, so the fake peak errs high.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..infer.features import describer
from ..model import build_net
from .loop import freeze_batchnorm
from .loss import MarginClassifier, triplet_loss
from .tuples import uses_arcface, uses_triplet

# name -> (memory GB, precision, assumed sustained TFLOPS in that precision: about a quarter to a third of
# the tensor-core peak, what convolutional backbones reach in mixed precision)
GPUS: dict[str, tuple[float, torch.dtype, float]] = {
    "t4": (16.0, torch.float16, 16.0),  # 65 TFLOPS fp16 peak
    "v100": (32.0, torch.float16, 35.0),  # 125 TFLOPS fp16 peak (the 32 GB card)
    "a100": (40.0, torch.bfloat16, 90.0),  # 312 TFLOPS bf16 peak (the 40 GB card)
    "h100": (80.0, torch.bfloat16, 250.0),  # 989 TFLOPS bf16 peak (SXM)
}
OVERHEAD_GB = 1.5  # CUDA context, cuDNN workspaces and the caching allocator's slack, on top of the peak
DESCRIBED_2019 = 761_757 + 117_577  # the index and test images a submission describes
# GLDv2's landmark counts (the train list's classes for ArcFace), used when the list is not on disk
GLDV2_CLASSES = {"clean": 81_313, "full": 203_094}


def class_count(cfg: dict) -> int:
    """The ArcFace head's classes: the landmarks of the recipe's train list, counted where it is on disk, else
    GLDv2's published counts (the plan is made before the data is downloaded)."""
    from ..competition import load_competition  # noqa: PLC0415
    from .tuples import load_train_set  # noqa: PLC0415

    try:
        labels = load_train_set(load_competition(cfg["competition"]), cfg["data"]["root"],
                                cfg["data"]["train_list"]).labels
    except Exception:  # not downloaded (or not readable): the published count
        return GLDV2_CLASSES[cfg["data"]["train_list"]]
    return len(set(labels.tolist()))


@dataclass(frozen=True)
class Measured:
    peak_gb: float
    tflop: float


def _fake_copy(net: torch.nn.Module):
    """(fake mode, a fake-tensor copy of ``net``): the real net is built once on the CPU, then copied."""
    from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode  # noqa: PLC0415

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with FakeCopyMode(mode):
        return mode, copy.deepcopy(net)


def _tracked(mode, modules: list, step) -> Measured:
    from torch.distributed._tools.mem_tracker import MemTracker  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    with mode:
        tracker = MemTracker()
        tracker.track_external(*modules)
        flops = FlopCounterMode(display=False)
        with tracker, flops:
            step()
        peak = sum(device["Total"] for device in tracker.get_tracker_snapshot("peak").values())
    return Measured(peak / 2**30, flops.get_total_flops() / 1e12)


def measure_train_step(cfg: dict, dtype: torch.dtype, classes: int | None = None) -> Measured:
    """Peak memory and FLOPs of one forward/backward of ``tuples_per_forward`` tuples at the largest training
    size and an Adam step; with an ArcFace term, its class centres (``classes`` x sub-centres x D, with their
    gradient and Adam's two moments) and logits are in the step too."""
    tcfg = cfg["train"]
    net = build_net({**cfg["model"], "pretrained": "none"})
    modules: list[torch.nn.Module] = [net]
    if uses_arcface(tcfg):
        arc = tcfg["arcface"]
        modules.append(MarginClassifier(net.dim, classes or class_count(cfg), arc["subcenters"], arc["scale"],
                                        arc["margin"]))
    mode, copies = _fake_copy(torch.nn.ModuleList(modules))
    net, classifier = copies[0], (copies[1] if len(copies) > 1 else None)
    per_tuple = 2 + tcfg["neg_num"]
    images = tcfg["tuples_per_forward"] * per_tuple
    size = max([tcfg["image_size"], *(s for _, s in tcfg.get("size_schedule") or [])])

    def step():
        net.train()
        if tcfg["freeze_bn"]:
            freeze_batchnorm(net.backbone)
        optimizer = torch.optim.Adam([p for m in copies for p in m.parameters()], lr=tcfg["lr"])
        batch = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8)
        with torch.autocast("cpu", dtype=dtype):
            descriptors = net(batch).float().view(tcfg["tuples_per_forward"], per_tuple, -1)
        loss = torch.zeros(())
        if uses_triplet(tcfg):
            loss = loss + triplet_loss(descriptors[:, 0], descriptors[:, 1], descriptors[:, 2:], tcfg["margin"])
        if classifier is not None:
            loss = loss + classifier(descriptors.flatten(0, 1), torch.zeros(images, dtype=torch.long))
        loss.backward()
        optimizer.step()

    return _tracked(mode, list(copies), step)


def measure_extract_batch(cfg: dict, dtype: torch.dtype) -> Measured:
    """Peak memory and FLOPs of one extraction batch through the recipe's TTA (scales, flip)."""
    icfg = cfg["infer"]
    mode, net = _fake_copy(build_net({**cfg["model"], "pretrained": "none"}))

    def step():
        net.eval()
        model = describer(net, icfg)
        batch = torch.randint(0, 256, (icfg["batch_size"], 3, icfg["image_size"], icfg["image_size"]),
                              dtype=torch.uint8)
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            model(batch)

    return _tracked(mode, [net], step)


@dataclass(frozen=True)
class RecipePlan:
    gpu: str
    gpus: int
    epochs: int
    steps_per_epoch: int
    forwards_per_step: float  # tuples_per_step / tuples_per_forward, over all GPUs
    trained_per_epoch: int
    described_per_epoch: int
    train: Measured  # one forward + backward of tuples_per_forward tuples, and the optimiser step
    extract: Measured  # one extraction batch
    mining_tflop_per_image: float
    per_image_extract_tflop: float

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def memory_gb(self) -> float:
        return GPUS[self.gpu][0]

    @property
    def tflops(self) -> float:
        return GPUS[self.gpu][2]

    def fits(self, peak_gb: float) -> bool:
        return peak_gb + OVERHEAD_GB <= self.memory_gb

    @property
    def fits_card(self) -> bool:
        """Both the training step and the extraction batch fit the card with the allowance."""
        return self.fits(self.train.peak_gb) and self.fits(self.extract.peak_gb)

    @property
    def train_hours(self) -> float:
        """Wall hours on ``gpus`` GPUs: each step's forwards and mining's forwards split over them."""
        per_epoch = (self.train.tflop * self.forwards_per_step * self.steps_per_epoch
                     + self.described_per_epoch * self.mining_tflop_per_image) / self.gpus
        return per_epoch * self.epochs / self.tflops / 3600

    @property
    def extract_gpu_hours(self) -> float:
        return DESCRIBED_2019 * self.per_image_extract_tflop / self.tflops / 3600


def plan_recipe(cfg: dict, gpu: str, gpus: int, measured: dict | None = None) -> RecipePlan:
    """The plan of ``cfg`` on ``gpus`` x ``gpu``; ``measured`` caches the fake-tensor runs by precision."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU '{gpu}'; use one of {', '.join(GPUS)}")
    tcfg = cfg["train"]
    dtype = GPUS[gpu][1]
    measured = measured if measured is not None else {}
    key = torch.finfo(dtype).bits  # float16 and bfloat16 hold the same bytes: one run serves both
    if key not in measured:
        measured[key] = (measure_train_step(cfg, dtype), measure_extract_batch(cfg, dtype))
    train, extract = measured[key]
    images_per_tuple = 2 + tcfg["neg_num"]
    # mining describes queries and pool once each, forward only, at the training size: about a third of a
    # training image's forward + backward
    mining_per_image = train.tflop / (tcfg["tuples_per_forward"] * images_per_tuple) / 3
    mines = tcfg["negatives"] == "hard" and uses_triplet(tcfg)  # ArcFace alone mines nothing
    return RecipePlan(gpu, gpus, tcfg["epochs"], max(1, tcfg["tuples_per_epoch"] // tcfg["tuples_per_step"]),
                      tcfg["tuples_per_step"] / tcfg["tuples_per_forward"], tcfg["tuples_per_epoch"] * images_per_tuple,
                      tcfg["tuples_per_epoch"] + tcfg["pool_size"] if mines else 0, train, extract, mining_per_image,
                      extract.tflop / cfg["infer"]["batch_size"])


def plan_table(name: str, plans: list[RecipePlan]) -> list[str]:
    """Markdown rows, one per GPU."""
    rows = []
    for p in plans:
        rows.append(
            f"| {name} | {p.gpus} x {p.gpu} ({p.memory_gb:.0f} GB) | {p.steps_per_epoch:,} / {p.steps:,} | "
            f"{p.trained_per_epoch:,} / {p.described_per_epoch:,} | {p.train.peak_gb:.1f} GB "
            f"({'fits' if p.fits(p.train.peak_gb) else 'OUT OF MEMORY'}) | {p.extract.peak_gb:.1f} GB "
            f"({'fits' if p.fits(p.extract.peak_gb) else 'OUT OF MEMORY'}) | {p.train_hours:.1f} h | "
            f"{p.extract_gpu_hours:.1f} GPU h | {p.tflops:.0f} |")
    return rows


TABLE_HEADER = ["| recipe | GPUs | steps / epoch / in all | images trained / described per epoch | train step peak "
                f"(+{OVERHEAD_GB} GB allowance) | extraction batch peak | train (wall) | extract 2019 index + test | "
                "assumed TFLOPS |", "|---|---|---|---|---|---|---|---|---|"]

