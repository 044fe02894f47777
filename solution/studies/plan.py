"""``python -m solution plan``: what a recipe costs on a GPU, measured without one.

- Steps: optimiser steps per epoch and in all, images trained and described (for mining) per epoch, from
  the recipe's counts (``train.tuples_per_step`` is global, so the GPU count changes the time, not the steps).
- Memory: one real training step (the recipe's net, one forward of ``train.tuples_per_forward`` tuples at
  the largest training size square, ``train.loss`` (ArcFace's class centres over the train list's landmarks
  included), backward, Adam's step) and one extraction batch
  (``infer.batch_size`` images at ``infer.image_size`` through the recipe's TTA) run on PyTorch's fake
  tensors, which carry shapes and dtypes but no data, under its memory tracker
  (``torch.distributed._tools.mem_tracker``), with autocast at the GPU's precision. The measured step is the
  second: Adam's two moments exist only after a first ``step()``, and from then on they are held through
  every forward and backward. On several GPUs DDP's gradient buckets (a float32 copy of the net's gradient)
  are added. The peak plus a fixed allowance for the CUDA context and the allocator (:data:`OVERHEAD_GB`)
  is compared with what the card reports as its memory (``total_memory``, in GiB: a "16 GB" T4 has 14.76).
- Time: FLOPs of the same step and batch from ``torch.utils.flop_counter``, with the backward of grouped
  and depthwise convolutions counted right (:func:`conv_backward_flop`), at an assumed sustained rate per
  GPU (:data:`GPUS`, printed with every projection). The hours hold the optimiser steps, mining, the
  per-epoch validation and the before/after test scoring the trainer runs.

CPU autocast keeps a few more operations in float32 than CUDA's, so the fake peak errs high.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..config import ConfigError
from ..infer.features import tta_module
from ..model import build_net
from ..train.loop import freeze_batchnorm
from ..train.loss import MarginClassifier, triplet_loss
from ..train.tuples import uses_arcface, uses_triplet


@dataclass(frozen=True)
class Card:
    nominal_gb: int  # what the card is sold as
    usable_gib: float  # what CUDA reports as its memory (cudaGetDeviceProperties' totalGlobalMem), in GiB
    dtype: torch.dtype  # the mixed precision it trains in
    tflops: float  # assumed sustained rate in that precision


# about a quarter to a third of the tensor-core peak: what convolutional backbones reach in mixed precision
GPUS: dict[str, Card] = {
    "t4": Card(16, 14.76, torch.float16, 16.0),  # 15,843,721,216 bytes; 65 TFLOPS fp16 peak
    "v100": Card(32, 31.75, torch.float16, 35.0),  # the 32 GB card, 34,089,730,048 bytes; 125 TFLOPS fp16 peak
    "a100": Card(40, 39.39, torch.bfloat16, 90.0),  # the 40 GB card, 42,298,834,944 bytes; 312 TFLOPS bf16
    "h100": Card(80, 79.1, torch.bfloat16, 250.0),  # SXM, about 84.9e9 bytes; 989 TFLOPS bf16 peak
}
OVERHEAD_GB = 1.5  # GiB: CUDA context, cuDNN workspaces and the caching allocator's slack, on top of the peak
DESCRIBED_2019 = 761_757 + 117_577  # the index and test images a submission describes
# GLDv2's landmark counts (the train list's classes for ArcFace) and images, used when the list is not on disk
GLDV2_CLASSES = {"clean": 81_313, "full": 203_094}
GLDV2_IMAGES = {"clean": 1_580_470, "full": 4_132_914}


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.convolution_backward``, groups counted.

    torch's own formula (up to 2.14 at least) computes the weight gradient as a dense convolution of the
    input with the output gradient, ``groups`` times too much: a depthwise 3x3 over C channels is counted
    C times its cost. Each group's weight gradient sees only its own C_in / groups input channels."""
    from torch.utils.flop_counter import conv_flop_count  # noqa: PLC0415

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:  # the input gradient: a (transposed) convolution of the output gradient by the weight
        flops += conv_flop_count(list(grad_out_shape), list(w_shape), list(out_shape[0]), not transposed)
    if output_mask[1]:
        grad_weight = list(out_shape[1])
        if transposed:
            dense = conv_flop_count(t(grad_out_shape), t(x_shape), t(grad_weight), transposed=False)
        else:
            dense = conv_flop_count(t(x_shape), t(grad_out_shape), t(grad_weight), transposed=False)
        flops += dense // groups
    return flops


def flop_counter():
    """torch's FLOP counter with :func:`conv_backward_flop` in place of its own."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop})


def class_count(cfg: dict) -> int:
    """The ArcFace head's classes: the landmarks of the recipe's train list, counted where it is on disk, else
    GLDv2's published counts (the plan is made before the data is downloaded)."""
    from ..competition import load_competition  # noqa: PLC0415
    from ..train.tuples import load_train_set  # noqa: PLC0415

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


def _tracked(mode, external: list, step, warmup=None) -> Measured:
    """Peak memory and FLOPs of ``step()`` in fake ``mode``; ``warmup()`` runs first, untracked, to create
    the state a steady-state step holds (Adam's moments), and ``external`` (modules, the optimiser) counts
    as memory held before the step."""
    from torch.distributed._tools.mem_tracker import MemTracker  # noqa: PLC0415

    with mode:
        if warmup is not None:
            warmup()
        tracker = MemTracker()
        tracker.track_external(*external)
        flops = flop_counter()
        with tracker, flops:
            step()
        peak = sum(device["Total"] for device in tracker.get_tracker_snapshot("peak").values())
    return Measured(peak / 2**30, flops.get_total_flops() / 1e12)


def measure_train_step(cfg: dict, dtype: torch.dtype, classes: int | None = None, steady: bool = True) -> Measured:
    """Peak memory and FLOPs of one steady-state step: forward/backward of ``tuples_per_forward`` tuples at
    the largest training size and Adam's step, with Adam's moments already held (the step after the first;
    ``steady=False``: the first, before they exist);
    with an ArcFace term, its class centres (``classes`` x sub-centres x D, with their gradient and Adam's two
    moments) and logits are in the step too."""
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
    with mode:
        optimizer = torch.optim.Adam([p for m in copies for p in m.parameters()], lr=tcfg["lr"])

    def step():
        net.train()
        if tcfg["freeze_bn"]:
            freeze_batchnorm(net.backbone)
        optimizer.zero_grad(set_to_none=True)
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

    def warmup():
        step()
        optimizer.zero_grad(set_to_none=True)  # the trainer's gradients are gone between steps too

    return _tracked(mode, [*copies, optimizer], step, warmup if steady else None)


def measure_extract_batch(cfg: dict, dtype: torch.dtype, one_scale: bool = False) -> Measured:
    """Peak memory and FLOPs of one extraction batch through the recipe's TTA (scales, flip); ``one_scale``:
    at ``infer.image_size`` alone, as the trainer describes for validation and its before/after scores."""
    icfg = {**cfg["infer"], **({"scales": [1], "flip": False} if one_scale else {})}
    mode, net = _fake_copy(build_net({**cfg["model"], "pretrained": "none"}))

    def step():
        net.eval()
        model = tta_module(net, icfg)
        batch = torch.randint(0, 256, (icfg["batch_size"], 3, icfg["image_size"], icfg["image_size"]),
                              dtype=torch.uint8)
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            model(batch)

    return _tracked(mode, [net], step)


def validation_images(cfg: dict) -> int:
    """Images the trainer describes each epoch to validate on its held-out landmarks (rank 0 alone): the
    landmarks times the train list's mean images per landmark (GLDv2's published counts)."""
    landmarks = cfg["train"]["val_landmarks"]
    if not landmarks or cfg["train"]["select"] == "last":
        return 0
    train_list = cfg["data"]["train_list"]
    per_landmark = GLDV2_IMAGES.get(train_list, GLDV2_IMAGES["clean"]) / GLDV2_CLASSES.get(train_list, 81_313)
    return round(landmarks * per_landmark)


def ddp_bucket_gb(cfg: dict) -> float:
    """DDP's gradient buckets: a float32 copy of the net's trainable gradient (the class head is outside DDP)."""
    net = build_net({**cfg["model"], "pretrained": "none"})
    return sum(p.numel() for p in net.parameters() if p.requires_grad) * 4 / 2**30


@dataclass(frozen=True)
class RecipePlan:
    gpu: str
    gpus: int
    epochs: int
    steps_per_epoch: int
    forwards_per_step: float  # tuples_per_step / tuples_per_forward, over all GPUs
    trained_per_epoch: int
    described_per_epoch: int  # mining, at the training size
    train: Measured  # one steady-state forward + backward of tuples_per_forward tuples and the optimiser step
    extract: Measured  # one extraction batch through the TTA
    mining_tflop_per_image: float
    per_image_extract_tflop: float
    per_image_score_tflop: float = 0.0  # one scale at infer.image_size: validation and the test scores
    validated_per_epoch: int = 0  # held-out landmarks' images, rank 0 alone
    scored_images: int = 0  # test + index, described before (eval_before) and after training, on every GPU
    ddp_gb: float = 0.0  # DDP's gradient buckets, held on each GPU when there are several

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def card(self) -> Card:
        return GPUS[self.gpu]

    @property
    def memory_gb(self) -> float:
        """What the card reports, in GiB (less than its nominal size)."""
        return self.card.usable_gib

    @property
    def tflops(self) -> float:
        return self.card.tflops

    @property
    def train_peak_gb(self) -> float:
        return self.train.peak_gb + (self.ddp_gb if self.gpus > 1 else 0.0)

    def fits(self, peak_gb: float) -> bool:
        return peak_gb + OVERHEAD_GB <= self.memory_gb

    @property
    def fits_card(self) -> bool:
        """Both the training step (with DDP's buckets) and the extraction batch fit the card with the allowance."""
        return self.fits(self.train_peak_gb) and self.fits(self.extract.peak_gb)

    @property
    def scoring_hours(self) -> float:
        """Wall hours of the per-epoch validation (rank 0 alone) and the before/after test scores (shared)."""
        tflop = (self.validated_per_epoch * self.epochs
                 + self.scored_images / self.gpus) * self.per_image_score_tflop
        return tflop / self.tflops / 3600

    @property
    def train_hours(self) -> float:
        """Wall hours on ``gpus`` GPUs: each step's forwards and mining's forwards split over them, plus
        :attr:`scoring_hours`."""
        per_epoch = (self.train.tflop * self.forwards_per_step * self.steps_per_epoch
                     + self.described_per_epoch * self.mining_tflop_per_image) / self.gpus
        return per_epoch * self.epochs / self.tflops / 3600 + self.scoring_hours

    @property
    def extract_gpu_hours(self) -> float:
        return DESCRIBED_2019 * self.per_image_extract_tflop / self.tflops / 3600


def plan_recipe(cfg: dict, gpu: str, gpus: int, measured: dict | None = None) -> RecipePlan:
    """The plan of ``cfg`` on ``gpus`` x ``gpu``; ``measured`` caches the fake-tensor runs by precision."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU '{gpu}'; use one of {', '.join(GPUS)}")
    tcfg = cfg["train"]
    if gpus > tcfg["tuples_per_step"]:  # the trainer refuses it at its first epoch; say so before any GPU runs
        raise ConfigError(f"--gpus {gpus} is more than train.tuples_per_step={tcfg['tuples_per_step']}: each GPU "
                          f"needs at least one tuple per step; use --gpus <= {tcfg['tuples_per_step']} or raise "
                          "train.tuples_per_step")
    share = tcfg["tuples_per_step"] // gpus  # each GPU's tuples per step (the batch is cut to a multiple of gpus)
    if tcfg["tuples_per_forward"] > share:  # a forward never holds more than the GPU's share: measure that one
        cfg = {**cfg, "train": {**tcfg, "tuples_per_forward": share}}
        tcfg = cfg["train"]
    dtype = GPUS[gpu].dtype
    measured = measured if measured is not None else {}
    key = torch.finfo(dtype).bits  # float16 and bfloat16 hold the same bytes: one run serves both
    if key not in measured:
        measured[key] = (measure_train_step(cfg, dtype), measure_extract_batch(cfg, dtype),
                         measure_extract_batch(cfg, dtype, one_scale=True), ddp_bucket_gb(cfg))
    train, extract, *rest = measured[key]
    score, ddp_gb = rest if rest else (None, 0.0)  # callers may pass (train, extract) alone
    images_per_tuple = 2 + tcfg["neg_num"]
    # mining describes queries and pool once each, forward only, at the training size: about a third of a
    # training image's forward + backward
    mining_per_image = train.tflop / (tcfg["tuples_per_forward"] * images_per_tuple) / 3
    mines = tcfg["negatives"] == "hard" and uses_triplet(tcfg)  # ArcFace alone mines nothing
    per_score = score.tflop / cfg["infer"]["batch_size"] if score is not None else 0.0
    return RecipePlan(gpu, gpus, tcfg["epochs"], max(1, tcfg["tuples_per_epoch"] // tcfg["tuples_per_step"]),
                      tcfg["tuples_per_step"] / tcfg["tuples_per_forward"], tcfg["tuples_per_epoch"] * images_per_tuple,
                      tcfg["tuples_per_epoch"] + tcfg["pool_size"] if mines else 0, train, extract, mining_per_image,
                      extract.tflop / cfg["infer"]["batch_size"], per_score, validation_images(cfg),
                      DESCRIBED_2019 * (2 if tcfg["eval_before"] else 1), ddp_gb)


def _hours(value: float) -> str:
    """One decimal, two below an hour: a quarter-hour run must not print as 0.0 h."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def plan_table(name: str, plans: list[RecipePlan]) -> list[str]:
    """Markdown rows, one per GPU."""
    rows = []
    for p in plans:
        rows.append(
            f"| {name} | {p.gpus} x {p.gpu} ({p.card.nominal_gb} GB: {p.memory_gb:.2f} GiB) | "
            f"{p.steps_per_epoch:,} / {p.steps:,} | {p.trained_per_epoch:,} / {p.described_per_epoch:,} | "
            f"{p.train_peak_gb:.1f} GiB ({'fits' if p.fits(p.train_peak_gb) else 'OUT OF MEMORY'}) | "
            f"{p.extract.peak_gb:.1f} GiB ({'fits' if p.fits(p.extract.peak_gb) else 'OUT OF MEMORY'}) | "
            f"{_hours(p.train_hours)} h ({_hours(p.scoring_hours)} h scoring) | {_hours(p.extract_gpu_hours)} GPU h | "
            f"{p.tflops:.0f} |")
    return rows


TABLE_HEADER = ["| recipe | GPUs (nominal: reported memory) | steps / epoch / in all | images trained / described "
                f"per epoch | train step peak, DDP buckets included (+{OVERHEAD_GB} GiB allowance) | extraction batch "
                "peak | train (wall), of which validation and test scoring | extract 2019 index + test | "
                "assumed TFLOPS |", "|---|---|---|---|---|---|---|---|---|"]
