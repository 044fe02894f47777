"""Search a folder of your own images with a trained run: ``index`` describes the folder once, ``query``
answers images against it with the same search and re-ranking as ``submit``.

    runs/<run>/gallery/<key>/images/index/a/b/c/<id>.jpg   links to the folder's images (never copies)
    runs/<run>/gallery/<key>/images/index.csv               their ids (the start of each file's sha1)
    runs/<run>/gallery/<key>/sources.csv                    id,path
    runs/<run>/gallery/<key>/features/<tag>/index.npy       the descriptors, cached like every split's
    runs/<run>/gallery/last.json                            the folder ``query`` searches by default

``key`` is a hash of the folder's absolute path; the descriptors are keyed by the checkpoint, the
extraction settings and the id list, so a retrained run or a changed folder is described again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..competition import Competition, load_competition
from ..config import ConfigError, run_dir
from ..data.folder import IMAGE_SUFFIXES, link_in_place, list_images, usable
from ..data.gldv2 import DataError, image_path
from ..model.net import RetrievalNet
from ..runtime import data_workers
from .features import describe_images, features
from .pipeline import train_votes
from .retrieve import needs_train, retrieve

log = logging.getLogger(__name__)

LAST = "last.json"


@dataclass(frozen=True)
class Gallery:
    folder: Path         # the user's images
    root: Path           # runs/<run>/gallery/<key>
    ids: list[str]
    paths: dict[str, Path]

    @property
    def competition(self) -> Competition:
        """The gallery as a competition with one split, so the features cache serves it unchanged."""
        return Competition(slug="gallery", title=str(self.folder), kind="csv", source="folder",
                           data={"dir": "images", "index_csv": "index.csv"}, submission={}, metric={},
                           folder=self.root)


def _state(paths: list[Path]) -> str:
    """The listing with each file's size and modification time: what would make its ids change."""
    lines = []
    for path in paths:
        stat = path.stat()
        lines.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def build_gallery(cfg: dict, folder: str | Path) -> Gallery:
    """Link ``folder``'s images under the run by content id (hashing only when the folder changed since the
    last call) and remember it as the folder ``query`` searches."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"--images {folder} is not a folder; give the folder of images to search")
    paths = list_images(folder)
    if not paths:
        raise DataError(f"--images {folder} holds no images ({' '.join(IMAGE_SUFFIXES)}, at any depth)")
    base = run_dir(cfg) / "gallery"
    root = base / hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    marker, state = root / "gallery.json", _state(paths)
    known = json.loads(marker.read_text()) if marker.is_file() else {}
    if known.get("state") != state:
        entries = usable([(p, None) for p in paths], data_workers(cfg["run"]["workers"]))
        if not entries:
            raise DataError(f"--images {folder}: none of its {len(paths)} images is readable")
        entries.sort(key=lambda e: e.image_id)
        made: set[Path] = set()
        for entry in entries:
            link_in_place(image_path(root / "images", "index", entry.image_id), entry.path, made)
        with atomic_path(root / "images" / "index.csv") as tmp:
            tmp.write_text("\n".join(["id", *(e.image_id for e in entries)]) + "\n")
        with atomic_path(root / "sources.csv") as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "path"])
            writer.writerows([e.image_id, str(e.path)] for e in entries)
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"folder": str(folder), "state": state, "images": len(entries)}))
    with atomic_path(base / LAST) as tmp:
        tmp.write_text(json.dumps({"folder": str(folder), "gallery": root.name}))
    return _read_gallery(folder, root)


def _read_gallery(folder: Path, root: Path) -> Gallery:
    with (root / "sources.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return Gallery(folder, root, [r["id"] for r in rows], {r["id"]: Path(r["path"]) for r in rows})


def last_gallery(cfg: dict) -> Path:
    """The folder the last ``index`` described for this run."""
    path = run_dir(cfg) / "gallery" / LAST
    if not path.is_file():
        raise ConfigError(f"run {cfg['run']['name']} has described no folder yet; run `python -m solution index "
                          "--images DIR` first (or give query --images DIR)")
    return Path(json.loads(path.read_text())["folder"])


def gallery_features(net: RetrievalNet, gallery: Gallery, cfg: dict, device: torch.device) -> np.ndarray:
    """The gallery's descriptors in the index's search dtype, extracted once and cached."""
    infer_cfg = cfg["infer"]
    rows, ids = features(net, gallery.competition, gallery.root, "index", gallery.root / "features", infer_cfg,
                         device, data_workers(cfg["run"]["workers"]), infer_cfg["index"]["dtype"])
    if ids != gallery.ids:
        raise DataError(f"{gallery.root}: the cached descriptors list other images than sources.csv; delete "
                        f"{gallery.root} and run `index` again")
    return rows


def describe_queries(net: RetrievalNet, paths: list[Path], infer_cfg: dict, device: torch.device,
                     workers: int) -> np.ndarray:
    """Descriptors of the query images with the same test-time augmentation as the index; an unreadable
    query is a one-line DataError naming it."""
    for path in paths:
        if not path.is_file():
            raise DataError(f"query image {path} does not exist")
    rows, ok = describe_images(net, paths, infer_cfg, device, workers, "describe queries")
    if not ok.all():
        bad = paths[int(np.flatnonzero(~ok)[0])]
        raise DataError(f"query image {bad} is unreadable (not an image PIL can decode); give another file")
    return rows


def query(net: RetrievalNet, gallery: Gallery, images: list[Path], cfg: dict, device: torch.device,
          top: int) -> list[dict]:
    """For each query image: its top ``top`` gallery images, in the order the configured search and re-ranking
    give (``submit``'s), each with its cosine similarity to the query."""
    infer_cfg = {**cfg["infer"], "topk": max(top, cfg["infer"]["topk"])}
    index = gallery_features(net, gallery, cfg, device)
    queries = describe_queries(net, images, infer_cfg, device, data_workers(cfg["run"]["workers"]))
    train = labels = None
    if needs_train(infer_cfg):
        train, labels = train_votes(net, load_competition(cfg["competition"]), cfg, infer_cfg, device)
    # Not in place: the index is kept as described, so each hit's score is its cosine with the query (label
    # re-ranking orders hits by votes and has no score of its own; DBA and QE move both ends).
    neighbours, _ = retrieve(queries, index, infer_cfg, train, labels)
    answers = []
    for path, vector, row in zip(images, queries, neighbours):
        row = [int(j) for j in row[:top] if j >= 0]
        cosine = np.asarray(index[row], np.float32) @ vector if row else np.zeros(0, np.float32)
        hits = [{"rank": r + 1, "path": str(gallery.paths[gallery.ids[j]]), "id": gallery.ids[j],
                 "score": round(float(s), 4)} for r, (j, s) in enumerate(zip(row, cosine))]
        answers.append({"query": str(path), "hits": hits})
    return answers
