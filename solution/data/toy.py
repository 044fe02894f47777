"""The embedded competition: a procedurally generated mini-GLDv2, its layout and files.

Which images exist (landmarks shared with train or novel, distractors, queries, validation queries), their
ids and labels are decided here (:func:`layout`); each is drawn by ``toy_render.py``. Output is exactly
GLDv2's layout and CSVs, so the same readers serve real and embedded data. Everything is a pure function of
the seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from ..atomic import OWNED_MARKER, atomic_path, mark_owned, owned
from ..config import ConfigError
from .gldv2 import image_path, write_csv
from .toy_render import render_view, seeded_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToySize:
    train_landmarks: int
    train_views: tuple[int, int]      # min, max images per train landmark
    index_landmarks: int              # landmarks with index images (queried), shared and novel
    shared_fraction: float            # of those, the part that train also shows (with other images)
    index_views: tuple[int, int]
    index_distractors: int            # one-off buildings and scenes without a landmark
    queries: int                      # queries of index landmarks
    nonlandmark_queries: int
    noisy_fraction: float             # train.csv images that train_clean.csv drops
    image_size: int                   # longest side of the written JPEGs
    val_queries: int                  # validation queries of index landmarks (drawn like the test ones)
    val_nonlandmark_queries: int

    @property
    def shared_landmarks(self) -> int:
        return round(self.index_landmarks * self.shared_fraction)


# GLDv2 in miniature: about 3/4 of the queried landmarks are also train landmarks (other photographs,
# another numbering in the index), the rest never appear in train; 1,000 distractors sit in the index.
SIZES = {
    "default": ToySize(320, (4, 9), 400, 0.75, (2, 6), 1000, 440, 40, 0.05, 256, 440, 40),
    "tiny": ToySize(8, (4, 4), 6, 0.5, (3, 3), 6, 10, 2, 0.1, 128, 10, 2),
}


def make_id(seed: int, kind: str, number: int) -> str:
    """A stable 16-hex GLDv2-style id."""
    return hashlib.sha1(f"toy-{seed}-{kind}-{number}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ToyImage:
    split: str
    image_id: str
    landmark: int | None   # what the picture shows: a generator landmark number, or None
    label: int | None      # the train label; differs from ``landmark`` on noisy train rows
    view_key: tuple


def layout(seed: int, size: ToySize) -> list[ToyImage]:
    """Which images exist, with their ids, contents and labels (no pixels).

    Landmark numbers are the generator's: train landmarks are 0..T-1; an index landmark is
    either one of them (shared, shown by other images) or a novel number above T.
    """
    rng = seeded_rng(seed, 0)
    images: list[ToyImage] = []

    def add(split: str, landmark: int | None, label: int | None, kind: int) -> None:
        number = len(images) + 1
        images.append(ToyImage(split, make_id(seed, split, number), landmark, label, (kind, number)))

    for lm in range(size.train_landmarks):
        for _ in range(int(rng.integers(size.train_views[0], size.train_views[1] + 1))):
            # Noisy rows mimic GLDv2's unclean train.csv: labelled, but showing no landmark.
            noisy = rng.random() < size.noisy_fraction
            add("train", None if noisy else lm, lm, 3 if noisy else 0)
    shared = sorted(rng.choice(size.train_landmarks, size.shared_landmarks, replace=False).tolist())
    novel = list(range(size.train_landmarks, size.train_landmarks + size.index_landmarks - len(shared)))
    index_landmarks = shared + novel
    for lm in index_landmarks:
        for _ in range(int(rng.integers(size.index_views[0], size.index_views[1] + 1))):
            add("index", lm, lm, 0)
    for i in range(size.index_distractors):
        # A third of the distractors are one-off buildings seen once, the hardest kind of negative.
        add("index", 100_000 + i if i % 3 == 0 else None, None, 1)
    query_landmarks = rng.choice(index_landmarks, size.queries, replace=size.queries > len(index_landmarks))
    for lm in query_landmarks:
        add("test", int(lm), int(lm), 0)
    for _ in range(size.nonlandmark_queries):
        add("test", None, None, 2)
    # Validation queries: drawn like the test queries (the same mix of shared landmarks, novel ones and no
    # landmark at all), other photographs, their own solution file, searched against the same index. Choices
    # are made on them, so test is only reported. Their own random stream: the images above are unchanged.
    val_rng = seeded_rng(seed, 6)
    for lm in val_rng.choice(index_landmarks, size.val_queries, replace=size.val_queries > len(index_landmarks)):
        add("val", int(lm), int(lm), 0)
    for _ in range(size.val_nonlandmark_queries):
        add("val", None, None, 2)
    return images


def _write_batch(root: Path, seed: int, batch: list[ToyImage], image_size: int) -> None:
    for item in batch:
        path = image_path(root, item.split, item.image_id)
        if path.is_file():  # a re-run after an interruption only renders what is missing
            continue
        data = render_view(seed, item.landmark, item.view_key, image_size)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)


def _landmark_numbers(rng: np.random.Generator, landmarks: list[int]) -> dict[int, int]:
    """A GLDv2-style integer id for each generator landmark, drawn without repeats."""
    return dict(zip(landmarks, rng.choice(np.arange(1, 200_000), len(landmarks), replace=False).tolist()))


def write_csvs(root: Path, seed: int, images: list[ToyImage]) -> None:
    """GLDv2's files: train ids and index ids are separate numberings of the same landmarks."""
    rng = seeded_rng(seed, 3)
    train = sorted((im for im in images if im.split == "train"), key=lambda im: im.image_id)
    index = sorted((im for im in images if im.split == "index"), key=lambda im: im.image_id)
    test = sorted((im for im in images if im.split == "test"), key=lambda im: im.image_id)
    train_ids = _landmark_numbers(rng, sorted({im.label for im in train}))
    write_csv(root / "train.csv", "id,landmark_id", [f"{im.image_id},{train_ids[im.label]}" for im in train])
    clean: dict[int, list[str]] = {}
    for im in train:
        if im.landmark is not None:
            clean.setdefault(train_ids[im.label], []).append(im.image_id)
    write_csv(root / "train_clean.csv", "landmark_id,images",
               [f"{lm},{' '.join(ids)}" for lm, ids in sorted(clean.items())])
    write_csv(root / "index.csv", "id", [im.image_id for im in index])
    write_csv(root / "test.csv", "id", [im.image_id for im in test])
    # The index's own numbering (GLDv2's README: these ids "are different from the ones in the train set");
    # every index image that shows a landmark is listed, one-off buildings included.
    index_ids = _landmark_numbers(rng, sorted({im.landmark for im in index if im.landmark is not None}))
    write_csv(root / "index_image_to_landmark.csv", "id,landmark_id",
               [f"{im.image_id},{index_ids[im.landmark]}" for im in index if im.landmark is not None])
    relevant: dict[int, list[str]] = {}
    for im in index:
        if im.label is not None:
            relevant.setdefault(im.label, []).append(im.image_id)
    retrieval, recognition = [], []
    for im in test:
        usage = "Public" if rng.random() < 0.5 else "Private"
        if im.label is None or im.label not in relevant:
            retrieval.append(f"{im.image_id},None,Ignored")
        else:
            retrieval.append(f"{im.image_id},{' '.join(relevant[im.label])},{usage}")
        # Recognition labels are train ids; a novel landmark or a non-landmark query has none.
        recognition.append(f"{im.image_id},{train_ids.get(im.landmark, '') if im.landmark is not None else ''},"
                           f"{usage}")
    write_csv(root / "retrieval_solution_v2.1.csv", "id,images,Usage", retrieval)
    write_csv(root / "recognition_solution_v2.1.csv", "id,landmarks,Usage", recognition)
    sample = " ".join(im.image_id for im in index[:5])
    write_csv(root / "sample_submission.csv", "id,images", [f"{im.image_id},{sample}" for im in test])
    val = sorted((im for im in images if im.split == "val"), key=lambda im: im.image_id)
    val_rng = seeded_rng(seed, 7)  # its own stream: the test files above are unchanged
    write_csv(root / "val.csv", "id", [im.image_id for im in val])
    write_csv(root / "val_solution.csv", "id,images,Usage",
               [f"{im.image_id},None,Ignored" if im.label is None or im.label not in relevant else
                f"{im.image_id},{' '.join(relevant[im.label])},{'Public' if val_rng.random() < 0.5 else 'Private'}"
                for im in val])


GENERATOR = 5  # raise when the rendering or the plan changes: a set written by another version is replaced
MARKER = "toy.json"
SPLITS = ("train", "index", "test", "val")


def _clear_stale(root: Path, stamp: dict) -> None:
    """Remove a toy set written by another generator version, size or seed: its ids would collide."""
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return
    if not marker.is_file() and not any((root / split).is_dir() for split in SPLITS):
        return
    if not marker.is_file() and not owned(root):  # images this generator never wrote: never deleted
        raise ConfigError(f"{root} holds train/index/test folders but neither {MARKER} nor {OWNED_MARKER}: they "
                          "are not a toy set this project wrote, so they are not replaced; move them, or set "
                          "data.root to another folder")
    log.warning("toy set at %s was written by another generator, size or seed; regenerating it", root)
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
    for csv in root.glob("*.csv"):
        csv.unlink()
    marker.unlink(missing_ok=True)


def generate(root: str | Path, size: str = "default", seed: int = 0, workers: int = 2) -> Path:
    """Write the toy competition under ``root``; images already there are kept. Returns ``root``."""
    if size not in SIZES:
        raise ValueError(f"unknown toy size '{size}'; choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = {"generator": GENERATOR, "size": size, "seed": seed, "spec": json.loads(json.dumps(asdict(spec)))}
    _clear_stale(root, stamp)
    mark_owned(root, "data: the toy competition")
    images = layout(seed, spec)
    batches = [images[i:i + 32] for i in range(0, len(images), 32)]
    bar = tqdm(batches, desc="toy images", unit="batch")
    jobs = (delayed(_write_batch)(root, seed, b, spec.image_size) for b in bar)
    Parallel(n_jobs=max(1, workers), prefer="processes")(jobs)
    # The CSVs and then the marker come last, so their presence marks a complete set.
    write_csvs(root, seed, images)
    with atomic_path(root / MARKER) as tmp:
        tmp.write_text(json.dumps(stamp, indent=2))
    return root
