"""A competition from your own photographs: ``<images>/<label>/...`` (or a ``path,label`` CSV) becomes GLDv2's
files, so every stage downstream runs unchanged.

The split holds whole labels out. Training labels never appear among the queries: a query and its matches
come from a held-out label, some of whose images are queries and the rest index images. A label with a
single usable image cannot be both, so it joins the index as an unlabelled distractor, beside an optional
distractor folder. Validation and test queries come from different held-out labels and search the same
index. Images are never copied: each is linked in place under GLDv2's layout, by an id that is the start of
its content's sha1 (so a duplicate file is found by its id). The split is written once; a re-run keeps it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image
from tqdm.auto import tqdm

from ..atomic import atomic_path, mark_owned
from ..config import ConfigError
from .gldv2 import DataError, image_path, write_csv

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MARKER = "folder.json"
SOURCES = "sources.csv"  # id,split,label,path: where each linked image lives
SPLIT_DEFAULTS = {"train": 0.5, "val": 0.2, "queries": 0.3, "seed": 0}
CHUNK = 256  # files per job: few enough jobs that process start-up does not dominate at 100,000 files


@dataclass(frozen=True)
class FolderSpec:
    images: Path
    labels_csv: Path | None
    distractors: Path | None
    train: float      # of the labels with 2+ images, the part whose images all train
    val: float        # the part whose images give the validation queries (and index images)
    queries: float    # of a held-out label's images, the part that are queries (at least 1, 1 left to find)
    seed: int

    def stamp(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def _resolve(value: str | None, base: Path) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def folder_spec(data: dict, base: Path, source: str = "competition.yaml") -> FolderSpec:
    """The folder source's settings from a competition's ``data`` block (paths relative to ``base``, the
    competition's folder), each checked, or a one-line ConfigError naming the key."""
    if not data.get("images"):
        raise ConfigError(f"{source}: a folder competition needs data.images, the folder of <label>/ folders "
                          "(or of the files a data.labels_csv lists)")
    split = {**SPLIT_DEFAULTS, **(data.get("split") or {})}
    unknown = set(split) - set(SPLIT_DEFAULTS)
    if unknown:
        raise ConfigError(f"{source}: unknown data.split keys {sorted(unknown)}; valid: {sorted(SPLIT_DEFAULTS)}")
    for key in ("train", "val", "queries"):
        value = split[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"{source}: data.split.{key}={value!r} must be a fraction in [0, 1)")
    if split["train"] + split["val"] >= 1:
        raise ConfigError(f"{source}: data.split.train + data.split.val = {split['train'] + split['val']:g} leaves "
                          "no label for the test queries; keep their sum below 1")
    if split["queries"] <= 0:
        raise ConfigError(f"{source}: data.split.queries must be above 0: a held-out label needs a query")
    if isinstance(split["seed"], bool) or not isinstance(split["seed"], int):
        raise ConfigError(f"{source}: data.split.seed={split['seed']!r} must be an integer")
    return FolderSpec(_resolve(data["images"], base), _resolve(data.get("labels_csv"), base),
                      _resolve(data.get("distractors"), base), float(split["train"]), float(split["val"]),
                      float(split["queries"]), split["seed"])


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` at any depth (hidden files and folders skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        found.extend(Path(dirpath) / f for f in filenames if _visible(f) and f.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)


def _check_folder(path: Path, key: str) -> Path:
    if not path.is_dir():
        raise DataError(f"data.{key} {path} is not a folder; point it at your images (absolute, or relative to "
                        "the competition's folder)")
    return path


def labelled_images(spec: FolderSpec) -> list[tuple[Path, str]]:
    """(file, label) of every image: the first folder level under ``images`` names the label, or the CSV does.
    A CSV row whose file is missing, or a path (or link) that leads out of ``images``, is a one-line
    DataError naming the row; files directly under ``images`` have no label and are left out, said once."""
    root = _check_folder(spec.images, "images")
    if spec.labels_csv is None:
        pairs = []
        for child in sorted(root.iterdir()):
            if child.is_dir() and _visible(child.name):
                if child.is_symlink() and not _inside(child, root):  # a label folder linked in from elsewhere
                    raise DataError(f"{child} leads out of {root} (a link); images are only read inside "
                                    "data.images: move the folder in, or point data.images at one that holds it")
                pairs.extend((path, child.name) for path in list_images(child))
        loose = [p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
        if loose:
            log.warning("%d images directly under %s are in no label folder (e.g. %s); left out: put each in "
                        "<label>/, or list them in a labels CSV", len(loose), root, loose[0].name)
        # os.walk does not follow folder links, so only a file link can lead out: resolve just those
        escapes = (path for path, _ in pairs if path.is_symlink())
    else:
        pairs = _read_labels_csv(spec.labels_csv, root)  # each row checked, links and ../ alike
        escapes = ()
    for path in escapes:
        if not _inside(path, root):
            raise DataError(f"{path} leads out of {root} (a link or ../); images are only read inside data.images: "
                            "move the file in, or point data.images at a folder that holds it")
    return pairs


def _read_labels_csv(path: Path, root: Path) -> list[tuple[Path, str]]:
    if not path.is_file():
        raise DataError(f"data.labels_csv {path} does not exist; write it (columns path,label) or remove the key")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns path,label, found {','.join(reader.fieldnames or [])}")
        pairs = []
        for row, entry in enumerate(reader, start=2):
            file, label = (entry.get("path") or "").strip(), (entry.get("label") or "").strip()
            if not file or not label:
                raise DataError(f"{path}: row {row} lacks a path or a label; fill it or remove the row")
            image = Path(file).expanduser()
            image = image if image.is_absolute() else root / image
            if not _inside(image, root):
                raise DataError(f"{path}: row {row}: {file} is outside data.images {root}; list only files inside it")
            if not image.is_file():
                raise DataError(f"{path}: row {row}: {image} does not exist; fix the path or remove the row")
            pairs.append((image, label))
    return pairs


def _fingerprint(paths: list[Path]) -> list[tuple[str, str | None]]:
    """(id, None) for a readable image, (id or '', reason) for one that is not: the id is the start of the
    content's sha1; readable means PIL decodes it (a JPEG at its smallest draft size, so it stays cheap)."""
    out = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            out.append(("", exc.strerror or type(exc).__name__))
            continue
        digest = hashlib.sha1(data).hexdigest()[:16]
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (64, 64))
                image.load()
            out.append((digest, None))
        except Exception as exc:  # PIL raises many kinds for a bad file; each is the same verdict here
            out.append((digest, " ".join(str(exc).split())[:100] or type(exc).__name__))
    return out


def fingerprint(paths: list[Path], workers: int = 1) -> list[tuple[str, str | None]]:
    """:func:`_fingerprint` over ``paths`` in chunks, in ``workers`` processes, with a progress bar."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    bar = tqdm(chunks, desc="hash images", unit="chunk", disable=len(chunks) < 4)
    parts = Parallel(n_jobs=max(1, workers), prefer="processes")(delayed(_fingerprint)(c) for c in bar)
    return [entry for part in parts for entry in part]


@dataclass
class Entry:
    image_id: str
    path: Path
    label: str | None
    split: str = ""


def usable(pairs: list[tuple[Path, str | None]], workers: int = 1) -> list[Entry]:
    """The readable, distinct images of ``pairs``, in order: an unreadable file and a second copy of a file
    already kept (same content) are each named on one warning line and left out."""
    kept: dict[str, Entry] = {}
    for (path, label), (image_id, problem) in zip(pairs, fingerprint([p for p, _ in pairs], workers)):
        if problem is not None:
            log.warning("%s: unreadable image (%s); left out", path, problem)
        elif image_id in kept:
            first = kept[image_id]
            log.warning("%s is the same file as %s (label %s); left out", path, first.path, first.label or "none")
        else:
            kept[image_id] = Entry(image_id, path, label)
    return list(kept.values())


def assign(entries: list[Entry], labels_seen: list[str], spec: FolderSpec) -> list[Entry]:
    """Each entry's split (train, index, test or val), whole labels held out, as the module docstring says."""
    by_label: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.label is not None:
            by_label.setdefault(entry.label, []).append(entry)
    for label in sorted(set(labels_seen) - set(by_label)):
        log.warning("label %s has no usable image; left out", label)
    eligible = sorted(label for label, group in by_label.items() if len(group) >= 2)
    single = sorted(label for label, group in by_label.items() if len(group) == 1)
    n = len(eligible)
    n_train = round(spec.train * n)
    n_val = max(1, round(spec.val * n)) if spec.val > 0 else 0
    if n_train < 2 or n - n_train - n_val < 1:
        raise DataError(f"{spec.images}: {n} labels have 2+ usable images, too few for split train={spec.train:g} "
                        f"val={spec.val:g}: training needs 2 labels and test 1 ({n_train} and "
                        f"{n - n_train - n_val} here); add labels, or change data.split")
    rng = np.random.default_rng(spec.seed)
    order = [eligible[i] for i in rng.permutation(n)]
    roles = {label: "train" for label in order[:n_train]}
    roles.update({label: "val" for label in order[n_train:n_train + n_val]})
    roles.update({label: "test" for label in order[n_train + n_val:]})
    for label in eligible:
        group = by_label[label]
        if roles[label] == "train":
            for entry in group:
                entry.split = "train"
            continue
        shuffled = [group[i] for i in rng.permutation(len(group))]
        queries = min(len(group) - 1, max(1, round(spec.queries * len(group))))
        for i, entry in enumerate(shuffled):
            entry.split = roles[label] if i < queries else "index"
    for label in single:  # one image cannot be a query and its own match: a distractor, its label dropped
        entry = by_label[label][0]
        entry.split, entry.label = "index", None
    for entry in entries:
        if entry.label is None and not entry.split:
            entry.split = "index"
    if single:
        log.info("%d labels with a single image joined the index as distractors (e.g. %s)", len(single), single[0])
    return entries


def link_in_place(target: Path, source: Path, made: set[Path] | None = None) -> None:
    """``target`` points at ``source`` (a symbolic link, else a hard link): never a copy. ``made`` remembers
    the folders already created, so 100,000 links do not ask for their folders 100,000 times."""
    if made is None or target.parent not in made:
        target.parent.mkdir(parents=True, exist_ok=True)
        if made is not None:
            made.add(target.parent)
    try:
        os.symlink(source, target)
        return
    except FileExistsError:
        if target.resolve() == source.resolve():
            return
        target.unlink()
    except OSError:  # no symbolic links here (some Windows set-ups): a hard link is still no copy
        pass
    try:
        os.symlink(source, target)
    except OSError:
        try:
            os.link(source, target)
        except OSError as exc:
            raise DataError(f"cannot link {target} to {source} ({exc.strerror}): the images are referenced in "
                            "place, never copied; put data.root on a file system that allows links") from None


def write_competition(root: Path, entries: list[Entry], spec: FolderSpec) -> dict[str, int]:
    """Links and GLDv2's CSVs under ``root``; returns the count of each split."""
    labels = sorted({e.label for e in entries if e.label is not None})
    number = {label: i for i, label in enumerate(labels)}
    splits = {s: sorted((e for e in entries if e.split == s), key=lambda e: e.image_id)
              for s in ("train", "index", "test", "val")}
    made: set[Path] = set()
    for entry in tqdm(entries, desc="link images", unit="image", disable=len(entries) < 2000):
        link_in_place(image_path(root, entry.split, entry.image_id), entry.path, made)
    train = splits["train"]
    write_csv(root / "train.csv", "id,landmark_id", [f"{e.image_id},{number[e.label]}" for e in train])
    groups: dict[int, list[str]] = {}
    for e in train:
        groups.setdefault(number[e.label], []).append(e.image_id)
    write_csv(root / "train_clean.csv", "landmark_id,images",
               [f"{k},{' '.join(v)}" for k, v in sorted(groups.items())])
    write_csv(root / "index.csv", "id", [e.image_id for e in splits["index"]])
    write_csv(root / "index_image_to_landmark.csv", "id,landmark_id",
               [f"{e.image_id},{number[e.label]}" for e in splits["index"] if e.label is not None])
    relevant: dict[str, list[str]] = {}
    for e in splits["index"]:
        if e.label is not None:
            relevant.setdefault(e.label, []).append(e.image_id)
    usage = np.random.default_rng([spec.seed, 1])
    for split, csv_name, solution in (("test", "test.csv", "retrieval_solution_v2.1.csv"),
                                      ("val", "val.csv", "val_solution.csv")):
        if split == "val" and spec.val == 0:
            continue
        queries = splits[split]
        write_csv(root / csv_name, "id", [e.image_id for e in queries])
        write_csv(root / solution, "id,images,Usage",
                   [f"{e.image_id},{' '.join(relevant[e.label])},{'Public' if usage.random() < 0.5 else 'Private'}"
                    for e in queries])
    sample = " ".join(e.image_id for e in splits["index"][:5])
    write_csv(root / "sample_submission.csv", "id,images", [f"{e.image_id},{sample}" for e in splits["test"]])
    write_csv(root / "labels.csv", "landmark_id,label", [f"{number[label]},{_quoted(label)}" for label in labels])
    write_csv(root / SOURCES, "id,split,label,path",
               [f"{e.image_id},{e.split},{_quoted(e.label or '')},{_quoted(str(e.path))}"
                for e in sorted(entries, key=lambda e: str(e.path))])
    return {split: len(rows) for split, rows in splits.items()}


def _quoted(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([text])
    return buffer.getvalue()


def listing_digest(paths: list[Path]) -> str:
    return hashlib.sha1("\n".join(str(p) for p in sorted(paths)).encode()).hexdigest()


def all_sources(spec: FolderSpec) -> tuple[list[tuple[Path, str | None]], list[str]]:
    """(file, label or None) of every image the spec names (labelled, then distractors), and every label seen."""
    pairs: list[tuple[Path, str | None]] = list(labelled_images(spec))
    labels_seen = sorted({label for _, label in pairs})
    if spec.distractors is not None:
        pairs += [(path, None) for path in list_images(_check_folder(spec.distractors, "distractors"))]
    return pairs, labels_seen


def build(root: str | Path, spec: FolderSpec, workers: int = 1) -> dict:
    """Write the folder competition under ``root`` once; a later call checks it against the folder and keeps
    it. Returns the marker's content (settings, counts, seconds)."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        return _kept(root, json.loads(marker.read_text()), spec)
    started = time.perf_counter()
    pairs, labels_seen = all_sources(spec)
    listed = time.perf_counter()
    entries = assign(usable(pairs, workers), labels_seen, spec)
    hashed = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    mark_owned(root, "data: a folder competition")
    counts = write_competition(root, entries, spec)
    stamp = {"settings": spec.stamp(), "listing_sha1": listing_digest([p for p, _ in pairs]), "files": len(pairs),
             "counts": counts, "labels": {s: len({e.label for e in entries if e.split == s and e.label})
                                          for s in ("train", "test", "val")},
             "seconds": {"list": round(listed - started, 2), "hash_and_split": round(hashed - listed, 2),
                         "write": round(time.perf_counter() - hashed, 2)}}
    with atomic_path(marker) as tmp:  # last: its presence marks a complete competition
        tmp.write_text(json.dumps(stamp, indent=2))
    return stamp


def _kept(root: Path, stamp: dict, spec: FolderSpec) -> dict:
    """The split already written: refused if the settings changed, checked against the folder otherwise."""
    if stamp.get("settings") != spec.stamp():
        changed = sorted(k for k, v in spec.stamp().items() if stamp.get("settings", {}).get(k) != v)
        raise ConfigError(f"{root} was split with other settings ({', '.join(changed)} changed); a split is written "
                          f"once, so scores stay comparable: to split again, delete {root}")
    pairs, _ = all_sources(spec)
    gone = []
    with (root / SOURCES).open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not Path(row["path"]).is_file():
                gone.append(row["path"])
    if gone:
        raise DataError(f"{len(gone)} images of the split under {root} are gone (first: {gone[0]}); restore them, "
                        f"or delete {root} to split again")
    if listing_digest([p for p, _ in pairs]) != stamp["listing_sha1"]:
        log.warning("%s has changed since %s was split (%d files listed then, %d now): new files are left out; "
                    "delete %s to split again with them", spec.images, root, stamp["files"], len(pairs), root)
    return stamp
