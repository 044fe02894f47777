"""The extract stage: a split's descriptors written in shards that resume, then merged and checked.

    runs/<run>/features/<tag>/<split>/part-00000.{npy,ids.txt,bad.txt}   one per ``shard_size`` images
    runs/<run>/features/<tag>/<split>.{npy,ids.txt,bad.txt}              after the merge

``tag`` names the extraction settings (e.g. ``512px-s3-flip-mean-3f2a9c01e4``): a readable prefix and a hash of
every ``infer`` key that can change a descriptor (all of them but the search steps), so no two settings
share a folder, and a key added later is covered without anyone listing it.
A killed extraction restarts at the first missing shard; a finished split is
skipped. Shards can be spread over processes or machines (``--shard i/n``, or
the ranks of ``torchrun``); the merge checks every id is present exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..competition import Competition
from ..data.gldv2 import DataError, check_images_exist, image_path, read_ids, read_train, read_train_clean
from ..distributed import Dist, barrier, broadcast_object
from ..model.net import RetrievalNet
from .extract import extract_descriptors
from .retrieve import STEPS
from .tta import MultiScale, parse_scales

log = logging.getLogger(__name__)


# Keys of ``infer`` that only steer the search or the bookkeeping: everything else keys the features.
SEARCH_ONLY = (*STEPS, "topk", "index", "batch_size", "shard_size")


class MergeError(ValueError):
    """Shards that do not add up to the split: missing or duplicated ids."""


class CacheError(ValueError):
    """A cached file (features, shards) that is not what this checkpoint and these settings would write."""


def split_ids(comp: Competition, data_root: str | Path, split: str) -> list[str]:
    """Ids of a split, in CSV order, each checked to have its image file."""
    if split == "train":
        path = comp.csv_path(data_root, "train_clean_csv")
        ids = read_train_clean(path)["id"].tolist() if path.is_file() else \
            read_train(comp.csv_path(data_root, "train_csv"))["id"].tolist()
    else:
        path = comp.csv_path(data_root, f"{split}_csv")
        ids = read_ids(path)
    if not ids:
        raise DataError(f"{path} lists no images (a header alone); restore the competition's file, or run "
                        "`make data` again")
    if split == "val":  # before the images: an id shared with test is the mistake to name
        check_validation_apart(comp, data_root, ids, path)
    check_images_exist(comp.data_dir(data_root), split, ids, path)
    return ids


def check_validation_apart(comp: Competition, data_root: str | Path, val_ids: list[str], val_path: Path) -> None:
    """Validation queries that are also test queries or index images would make every choice "on
    validation" a choice on test: refused, naming the file and a shared id."""
    chosen = set(val_ids)
    for other in ("test", "index"):
        path = comp.csv_path(data_root, f"{other}_csv")
        if not path.is_file():
            continue
        shared = [i for i in read_ids(path) if i in chosen]
        if shared:
            raise DataError(f"{val_path} shares {len(shared)} of its {len(val_ids)} ids with {path.name} (first: "
                            f"{shared[0]}): validation must be apart from {other}, or what is chosen on it is "
                            "chosen on test; restore the competition's val.csv, or run `make data` again")


def extraction_settings(infer_cfg: dict) -> dict:
    """The part of ``infer`` that can change a descriptor or its file: all but :data:`SEARCH_ONLY`, with the
    scales as the numbers they mean (``sqrt2`` and ``1.41421356`` are one setting)."""
    settings = {k: v for k, v in infer_cfg.items() if k not in SEARCH_ONLY}
    if "scales" in settings:
        settings["scales"] = [round(s, 6) for s in parse_scales(settings["scales"])]
    return settings


def extraction_key(infer_cfg: dict) -> str:
    """A short hash of :func:`extraction_settings`: equal keys, interchangeable descriptors."""
    text = json.dumps(extraction_settings(infer_cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def tta_tag(infer_cfg: dict) -> str:
    """The features folder's name: size, scale count, flip and combination for people, the key for safety."""
    scales = parse_scales(infer_cfg["scales"])
    tag = f"{infer_cfg['image_size']}px-s{len(scales)}" + ("-flip" if infer_cfg["flip"] else "")
    tag += f"-{infer_cfg['combine']}" if len(scales) > 1 or infer_cfg["flip"] else ""
    return f"{tag}-{extraction_key(infer_cfg)}"


def tta_module(net: RetrievalNet, infer_cfg: dict) -> torch.nn.Module:
    """The module that maps a batch of images to their test-time-augmented descriptors (``infer``'s scales,
    flip and combination); ``net`` itself at one scale without flip."""
    scales = parse_scales(infer_cfg["scales"])
    if scales == [1.0] and not infer_cfg["flip"]:
        return net
    return MultiScale(net, scales, infer_cfg["flip"], infer_cfg["combine"], infer_cfg["combine_p"])


def describe_images(net: RetrievalNet, paths: list[Path], infer_cfg: dict, device: torch.device, workers: int,
                    desc: str = "describe", data_parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors, ok flags) of ``paths`` as ``submit`` describes images: ``infer``'s image size and
    test-time augmentation, autocast on a GPU. With ``data_parallel`` each batch is split over every visible
    GPU (the kernel's two T4s). The one way images become descriptors outside training; unreadable ones get
    a zero row and ``False``."""
    model = tta_module(net, infer_cfg).to(device)
    if data_parallel and device.type == "cuda" and torch.cuda.device_count() > 1:
        model = torch.nn.DataParallel(model)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        return extract_descriptors(net, paths, infer_cfg["image_size"], infer_cfg["batch_size"], device, workers,
                                   desc=desc, forward=model)


def ids_digest(ids: list[str]) -> str:
    """sha1 of a split's id list, in order: the cache is keyed by the images, not by their count."""
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


def _read_manifest(path: Path) -> dict:
    """A shard folder's manifest; {} when missing or unreadable (so it matches nothing and is rewritten)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _write_shard(folder: Path, index: int, descriptors: np.ndarray, ids: list[str], bad: list[str],
                 dtype: str) -> None:
    stem = folder / f"part-{index:05d}"
    with atomic_path(stem.with_suffix(".npy")) as tmp:  # renamed last: the .npy marks a complete shard
        with tmp.open("wb") as handle:
            np.save(handle, descriptors.astype(dtype))
        # renamed over, not written through: a link left in their place (to /dev/zero, say) is replaced
        for listing, text in ((".ids.txt", "\n".join(ids) + "\n"), (".bad.txt", "".join(f"{i}\n" for i in bad))):
            with atomic_path(stem.with_suffix(listing)) as listed:
                listed.write_text(text)


def _shard_written(folder: Path, j: int) -> bool:
    return (folder / f"part-{j:05d}.npy").is_file()  # renamed last: a complete shard


def extract_split(net: RetrievalNet, comp: Competition, data_root: str | Path, split: str, out_root: Path,
                  infer_cfg: dict, device: torch.device, workers: int, shard: tuple[int, int] = (0, 1),
                  info: Dist | None = None) -> Path:
    """Describe this process's shards of ``split``; returns the split's shard folder.

    Under torchrun (``info`` active) rank 0 alone writes the manifest and removes stale shards while the
    others wait, then every rank takes its share of the shards not yet written, as rank 0 listed them: a
    resume with another world size, or with one rank's shards done, still splits the work evenly.
    Separate ``--shard i/n`` processes keep the fixed assignment j % n == i, whatever is done.
    """
    ids = split_ids(comp, data_root, split)
    folder = out_root / tta_tag(infer_cfg) / split
    folder.mkdir(parents=True, exist_ok=True)
    size = infer_cfg["shard_size"]
    manifest = {"split": split, "count": len(ids), "ids_sha1": ids_digest(ids), "shard_size": size,
                "checkpoint": net.meta.get("fingerprint", ""), "tta": tta_tag(infer_cfg),
                "extraction": extraction_settings(infer_cfg), "dim": net.dim}
    manifest_path = folder / "manifest.json"
    distributed = info is not None and info.active
    if not distributed or info.main:
        orphans = not manifest_path.is_file() and any(folder.glob("part-*"))
        if orphans or (manifest_path.is_file() and _read_manifest(manifest_path) != manifest):
            # Shards of an older checkpoint, another image list or another shard size, or shards no manifest
            # vouches for, are wrong for this one: never resumable.
            stale = list(folder.glob("part-*"))
            log.warning("%s: %s; discarding %d stale shard files", folder,
                        "shards without a manifest" if orphans else
                        "the checkpoint, settings, image list or shard size changed", len(stale))
            for path in stale:
                path.unlink(missing_ok=True)  # a separate --shard process may have removed it already
        with atomic_path(manifest_path) as tmp:  # never half-written, whoever reads it
            tmp.write_text(json.dumps(manifest))
    n_shards = math.ceil(len(ids) / size)
    if distributed:
        barrier(info)
        left = broadcast_object(info, [j for j in range(n_shards) if not _shard_written(folder, j)])
        mine = left[shard[0]::shard[1]]
    else:
        left = [j for j in range(n_shards) if not _shard_written(folder, j)]
        mine = [j for j in left if j % shard[1] == shard[0]]
    if len(left) < n_shards:
        log.info("%s: %d of %d shards already done; resuming", split, n_shards - len(left), n_shards)
    for j in mine:
        chunk = ids[j * size:(j + 1) * size]
        paths = [image_path(comp.data_dir(data_root), split, i) for i in chunk]
        descriptors, ok = describe_images(net, paths, infer_cfg, device, workers, f"{split} {j + 1}/{n_shards}")
        _write_shard(folder, j, descriptors, chunk, [i for i, good in zip(chunk, ok) if not good],
                     infer_cfg["dtype"])
    return folder


def check_rows(path: Path, rows: np.ndarray, count: int | None, dim: int | None, dtype: str | np.dtype | None,
               fix: str) -> None:
    """``rows`` read from ``path`` is a ``count`` x ``dim`` array of ``dtype`` (None: any), or a
    :class:`CacheError` that names the file, what it holds, what was expected, and ``fix``."""
    want_dtype = None if dtype is None else np.dtype(dtype)
    if (rows.ndim != 2 or (count is not None and rows.shape[0] != count) or (dim is not None and rows.shape[1] != dim)
            or (want_dtype is not None and rows.dtype != want_dtype)):
        want = f"{'?' if count is None else count} x {'?' if dim is None else dim} {want_dtype or ''}".rstrip()
        raise CacheError(f"{path} holds a {' x '.join(map(str, rows.shape))} {rows.dtype} array, not the {want} "
                         f"this checkpoint and these settings write; {fix}")


def check_finite(path: Path, rows: np.ndarray, fix: str, chunk: int = 65_536) -> None:
    """Every value of ``rows`` finite (a NaN or inf descriptor would rank as noise without a word), a chunk
    at a time so a memory map is never read whole at once; else a :class:`CacheError` naming ``path``."""
    for start in range(0, len(rows), chunk):
        block = np.asarray(rows[start:start + chunk])
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise CacheError(f"{path} holds NaN or inf descriptors (first at row {row}); {fix}")


def load_rows(path: Path, count: int | None, dim: int | None, dtype: str | np.dtype | None, fix: str,
              mmap: bool = True) -> np.ndarray:
    """A ``.npy`` of descriptors, memory-mapped and checked by :func:`check_rows`; unreadable is a CacheError."""
    try:
        rows = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CacheError(f"{path} is not a readable .npy file ({' '.join(str(exc).split())[:120]}); {fix}") from None
    check_rows(path, rows, count, dim, dtype, fix)
    return rows


def read_npz(path: str | Path, required: tuple[str, ...], what: str, fix: str,
             optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` this project wrote: every ``required`` key, and the ``optional`` ones it has.
    A file that is not a readable, pickle-free ``.npz`` holding them is a CacheError naming ``what`` it should
    be and ``fix``; a missing file stays a FileNotFoundError."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in required if key not in data]
            arrays = {key: np.asarray(data[key]) for key in (*required, *optional) if key in data}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CacheError(f"{path} is not {what} ({' '.join(str(exc).split())[:100]}); {fix}") from None
    if missing:
        raise CacheError(f"{path} is not {what} (it lacks {', '.join(missing)}); {fix}")
    return arrays


def merge_split(folder: Path, expected_ids: list[str], dtype: str | np.dtype = np.float32, dim: int | None = None,
                stored: str | np.dtype | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Concatenate the shards in order; every expected id exactly once, every shard checked (readable,
    ``dim`` columns of the ``stored`` dtype, one row per id) before anything is written. Writes ``<split>.npy``
    beside them (in the shards' own dtype) and returns the descriptors as ``dtype``, filled shard by shard into
    one array so a large split is never held twice."""
    parts = sorted(folder.glob("part-*.npy"))
    if not parts:
        raise MergeError(f"{folder} holds no shards; run `python -m solution extract` first")
    ids, bad, blocks = [], [], []
    for part in parts:
        fix = f"delete it (rm {part}) and run the command again: only that shard is extracted again"
        for listing in (part.with_suffix(".ids.txt"), part.with_suffix(".bad.txt")):
            if not listing.is_file():  # missing, or a link to a device (/dev/zero would be read without end)
                state = "not a regular file" if listing.exists() else "missing"
                raise CacheError(f"{part}: its {listing.name} is {state}; {fix}")
        part_ids = part.with_suffix(".ids.txt").read_text().split()
        bad.extend(part.with_suffix(".bad.txt").read_text().split())
        block = load_rows(part, len(part_ids), dim or (blocks[0].shape[1] if blocks else None),
                          stored or (blocks[0].dtype if blocks else None), fix)
        check_finite(part, block, fix)
        blocks.append(block)
        ids.extend(part_ids)
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    duplicated = [i for i, c in counts.items() if c > 1]
    missing = [i for i in expected_ids if i not in counts]
    if duplicated or missing or len(counts) != len(expected_ids):
        raise MergeError(f"{folder}: {len(missing)} ids missing (e.g. {missing[:2]}), {len(duplicated)} "
                         f"duplicated (e.g. {duplicated[:2]}); extract the missing shards, or delete the folder")
    if ids != expected_ids:  # every id once, yet not in the split's order: shards made for another list
        first = next(i for i, (a, b) in enumerate(zip(ids, expected_ids)) if a != b)
        raise MergeError(f"{folder}: the shards list {ids[first]} where the split lists {expected_ids[first]} (row "
                         f"{first}): they were made for another image list; delete the folder and extract again")
    stored_dtype = blocks[0].dtype
    descriptors = np.empty((len(ids), blocks[0].shape[1]), dtype)
    stem = folder.parent / folder.name
    with atomic_path(stem.with_suffix(".npy")) as tmp, tmp.open("wb") as handle:
        # Written through the handle, not a memory map, whose dirty pages would count as a second copy.
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(stored_dtype),
                                                      "fortran_order": False, "shape": descriptors.shape})
        row = 0
        for block in blocks:
            block = np.asarray(block)
            handle.write(np.ascontiguousarray(block, stored_dtype).tobytes())
            descriptors[row:row + len(block)] = block
            row += len(block)
        # renamed over, not written through: a link left in their place (to /dev/zero, say) is replaced
        for listing, text in ((".ids.txt", "\n".join(ids) + "\n"), (".bad.txt", "".join(f"{i}\n" for i in bad))):
            with atomic_path(stem.with_suffix(listing)) as listed:
                listed.write_text(text)
    if bad:
        log.warning("%s: %d unreadable images got zero descriptors; listed in %s", folder.name, len(bad),
                    stem.with_suffix(".bad.txt"))
    return descriptors, ids, bad


def _describes(manifest_path: Path, net: RetrievalNet, infer_cfg: dict) -> bool:
    """Whether a split's shards were made by this checkpoint with this TTA (a retrained run rewrites the
    checkpoint, so its merged features are stale however well their ids match)."""
    manifest = _read_manifest(manifest_path)
    fresh = (manifest.get("checkpoint") == net.meta.get("fingerprint", "")
             and manifest.get("tta") == tta_tag(infer_cfg))
    if not fresh:
        log.info("%s: made by another checkpoint or other settings; extracting again", manifest_path.parent)
    return fresh


def features(net: RetrievalNet, comp: Competition, data_root: str | Path, split: str, out_root: Path,
             infer_cfg: dict, device: torch.device, workers: int,
             dtype: str | np.dtype = np.float32) -> tuple[np.ndarray, list[str]]:
    """Extract (or resume) and merge a whole split in this process; a merged split is read back as is.
    Returns the descriptors as ``dtype`` (the index's search dtype, so a float16 index is never widened)."""
    stem = out_root / tta_tag(infer_cfg) / split
    expected = split_ids(comp, data_root, split)
    if stem.with_suffix(".npy").is_file() and _describes(stem / "manifest.json", net, infer_cfg):
        ids = stem.with_suffix(".ids.txt").read_text().split() if stem.with_suffix(".ids.txt").is_file() else []
        if ids == expected:
            merged = stem.with_suffix(".npy")
            fix = f"delete it (rm {merged}) and run the command again: it is merged again from the shards"
            rows = load_rows(merged, len(ids), net.dim, infer_cfg["dtype"], fix,
                             mmap=False)  # read whole: the caller may post-process it in place
            check_finite(merged, rows, fix)
            return rows.astype(dtype, copy=False), ids
        log.info("%s: the split's ids changed; extracting again", stem)
    folder = extract_split(net, comp, data_root, split, out_root, infer_cfg, device, workers)
    descriptors, ids, _ = merge_split(folder, expected, dtype, net.dim, infer_cfg["dtype"])
    return descriptors, ids
