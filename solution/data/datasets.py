"""Torch datasets: aspect-preserving evaluation images in size buckets, and training tuples."""

from __future__ import annotations

import logging
import signal
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .images import try_load_image

log = logging.getLogger(__name__)


def target_size(width: int, height: int, longest: int, multiple: int = 32) -> tuple[int, int]:
    """Longest side = ``longest``; the short side is rounded to ``multiple`` so images fall into few buckets."""
    scale = longest / max(width, height)
    short = max(multiple, int(round(min(width, height) * scale / multiple)) * multiple)
    return (longest, short) if width >= height else (short, longest)


EXIF_ORIENTATION = 0x0112
TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height once the image is upright


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of the image as shown upright, from the header alone (size and EXIF orientation);
    None when unreadable, or so large that PIL refuses it (the loader then reports and skips it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the loader reports what is wrong with the file, once
            with Image.open(path) as image:
                width, height = image.size
                if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED:
                    return height, width
                return width, height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def header_sizes(paths: list[Path], threads: int = 32) -> list[tuple[int, int] | None]:
    """``header_size`` of every path, read by a thread pool: each is one small read whose time is file-system
    latency (880k of them one by one took GLDv2 15-30 minutes before any GPU work)."""
    if len(paths) < 64 or threads <= 1:
        return [header_size(p) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(header_size, paths, chunksize=256))


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W uint8: a quarter of float32's bytes through the worker queues and the
    host-to-GPU copy; the net scales and normalises on its own device."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def single_threaded_opencv() -> None:
    """OpenCV (under albumentations) starts a thread pool the first time a warp or resize runs in parallel.
    A DataLoader worker forked from a process that holds that pool deadlocks on its copied locks, in its first
    OpenCV call; so every process of ours keeps OpenCV to one thread (the workers are the parallelism)."""
    cv2.setNumThreads(1)


single_threaded_opencv()  # at import: before any augmentation can run in this process


def worker_init(_: int) -> None:
    """DataLoader workers decode one image each: no thread pools of their own competing for the cores.

    A worker inherits the command's signal handlers through fork: Ctrl-C reaches the whole process group,
    and each worker would print a KeyboardInterrupt traceback above the one ``interrupted:`` line. Workers
    ignore SIGINT (the main process stops them) and die quietly on SIGTERM, which the loader sends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    single_threaded_opencv()


class EvalDataset(Dataset):
    """Images resized (aspect kept) so the longest side is ``longest``; a bad file yields zeros and ok=False."""

    def __init__(self, paths: list[Path], longest: int, threads: int = 32):
        self.paths = [Path(p) for p in paths]
        self.longest = longest
        self.sizes = [target_size(*(size or (longest, longest)), longest) for size in header_sizes(self.paths, threads)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        width, height = self.sizes[index]
        image = try_load_image(self.paths[index], quiet=True)  # extract_descriptors names it, once
        if image is None:
            return torch.zeros(3, height, width, dtype=torch.uint8), index, False
        image = image.resize((width, height), Image.BILINEAR)
        return to_tensor(np.asarray(image)), index, True


def bucket_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of indices that share one size, so nothing is squashed or padded."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, size in enumerate(sizes):
        groups[size].append(index)
    return [members[i:i + batch_size] for _, members in sorted(groups.items())
            for i in range(0, len(members), batch_size)]


def collate_eval(batch: list[tuple[torch.Tensor, int, bool]]):
    images, indices, ok = zip(*batch)
    return torch.stack(images), torch.tensor(indices), torch.tensor(ok)


def train_augmentation(cfg: dict, size: tuple[int, int], whole: bool = False) -> A.Compose:
    """Random resized crop to ``size`` (width, height) keeping most of the landmark, colour jitter, blur, JPEG;
    with ``rotate`` > 0 a rotation up to that many degrees, with ``gray_p`` > 0 greyscale (what photographs
    of a landmark differ by and the toy's renderer never shows). A step that is off is left out, not run at
    p=0, so recipes without it draw the same random numbers as before it existed. With ``whole`` the image
    is not cropped but fitted inside ``size`` whole (aspect kept, black borders): a positive keeps all it
    shares with its query."""
    width, height = size
    aspect = width / height
    if whole:
        steps = [A.LongestMaxSize(max_size_hw=(height, width)),
                 A.PadIfNeeded(min_height=height, min_width=width, position="center", border_mode=0, fill=0),
                 A.CenterCrop(height=height, width=width)]
    else:
        steps = [A.RandomResizedCrop(size=(height, width), scale=tuple(cfg["crop_scale"]),
                                     ratio=(0.75 * aspect, 1.333 * aspect))]
    if cfg["rotate"] > 0:
        steps.append(A.Affine(rotate=(-cfg["rotate"], cfg["rotate"]), border_mode=0, p=0.7))
    steps += [
        A.ColorJitter(brightness=cfg["jitter"], contrast=cfg["jitter"], saturation=cfg["jitter"], hue=0.03, p=0.8),
    ]
    if cfg["gray_p"] > 0:
        steps.append(A.ToGray(p=cfg["gray_p"]))
    steps += [
        A.GaussianBlur(blur_limit=(3, 5), p=cfg["blur_p"]),
        A.ImageCompression(quality_range=tuple(cfg["jpeg_quality"]), p=cfg["jpeg_p"]),
    ]
    return A.Compose(steps)


class TupleDataset(Dataset):
    """Each item is one (query, positive, negatives...) tuple, stacked as (2 + k) x 3 x H x W.

    Item i is cropped to ``shapes[i]`` (its aspect-ratio bucket); with ``train.positive_view=whole`` the
    positive is fitted in whole instead. The augmentation is re-seeded from (``seed``, item index) for every
    item, so a tuple looks the same whichever worker or rank loads it: runs and resumed runs repeat.
    """

    def __init__(self, tuples: list[list[Path]], shapes: list[tuple[int, int]], cfg: dict, seed: int = 0):
        self.tuples = tuples
        self.shapes = shapes
        self.cfg = cfg
        self.seed = seed
        self._augmenters: dict[tuple[int, int, bool], A.Compose] = {}

    def __len__(self) -> int:
        return len(self.tuples)

    def _load(self, path: Path, augment: A.Compose, shape: tuple[int, int]) -> torch.Tensor | None:
        image = try_load_image(path, quiet=True)  # a bad file yields None; the trainer names it once per run
        return None if image is None else to_tensor(augment(image=np.asarray(image))["image"])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        """(the tuple's images, the paths of those that were unreadable and replaced by zeros)."""
        shape = tuple(self.shapes[index])
        whole_positive = self.cfg["positive_view"] == "whole"
        images = []
        for position, path in enumerate(self.tuples[index]):
            whole = whole_positive and position == 1
            if (*shape, whole) not in self._augmenters:
                self._augmenters[(*shape, whole)] = train_augmentation(self.cfg, shape, whole)
            augment = self._augmenters[(*shape, whole)]
            if position == 0 or whole:  # one stream per pipeline: crop mode draws what it always drew
                augment.set_random_seed(self.seed * 1_000_003 + index + (7 if whole else 0))
            images.append(self._load(path, augment, shape))
        bad = [str(p) for p, image in zip(self.tuples[index], images) if image is None]
        return torch.stack([torch.zeros(3, shape[1], shape[0], dtype=torch.uint8) if i is None else i
                            for i in images]), bad


def collate_tuples(items: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[str]]:
    images, bad = zip(*items)
    return torch.stack(images), [path for paths in bad for path in paths]
