"""An optional pre-resized copy of a competition: decoding full-size GLDv2 JPEGs is the bottleneck otherwise.

``<root>/cache<L>/<dir>/`` mirrors ``<root>/<dir>/`` (CSVs copied, images at most L px on the longest
side, same a/b/c/<id>.jpg layout, unreadable images copied unchanged), so training and extraction use it
with ``data.root=<root>/cache<L>``.
Parallel with joblib; images already in the cache are skipped, so it resumes and re-runs for free.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from joblib import Parallel, delayed
from tqdm.auto import tqdm

from ..atomic import atomic_path
from .images import try_load_image

log = logging.getLogger(__name__)


def _resize_batch(paths: list[Path], src: Path, dst: Path, longest: int, quality: int) -> tuple[int, int, int]:
    written = skipped = bad = 0
    for path in paths:
        target = dst / path.relative_to(src)
        if target.is_file():
            skipped += 1
            continue
        image = try_load_image(path)
        if image is None:
            # Copied as it is: the CSVs still list it, and every stage then reports and skips it exactly as
            # it would without the cache (a missing file would stop extraction instead).
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
            bad += 1
            continue
        image.thumbnail((longest, longest))
        with atomic_path(target) as tmp:
            image.save(tmp, "JPEG", quality=quality)
        written += 1
    return written, skipped, bad


def preprocess(src: str | Path, dst: str | Path, splits: list[str], longest: int, workers: int = 2,
               quality: int = 90, batch: int = 256) -> dict[str, int]:
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for csv_file in src.glob("*.csv"):
        if not (dst / csv_file.name).is_file() or (dst / csv_file.name).stat().st_size != csv_file.stat().st_size:
            shutil.copy2(csv_file, dst / csv_file.name)
    totals = {"written": 0, "skipped": 0, "unreadable": 0}
    for split in splits:
        paths = sorted((src / split).glob("*/*/*/*.jpg"))
        chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
        jobs = (delayed(_resize_batch)(c, src, dst, longest, quality) for c in tqdm(chunks, desc=f"resize {split}"))
        for written, skipped, bad in Parallel(n_jobs=max(1, workers))(jobs):
            totals["written"] += written
            totals["skipped"] += skipped
            totals["unreadable"] += bad
    return totals
