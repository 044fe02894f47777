"""GLDv2 / Kaggle CSV readers and writer, and the id -> path mapping, shared by real, toy and folder data."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path

ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
USAGES = ("Public", "Private", "Ignored")


class DataError(ValueError):
    """A user-facing data problem: a missing file, a malformed CSV."""


def image_path(root: str | Path, split: str, image_id: str) -> Path:
    """``<root>/<split>/a/b/c/<id>.jpg``, GLDv2's layout."""
    return Path(root) / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def write_csv(path: str | Path, header: str, rows: list[str]) -> None:
    """A competition file (``header`` then one line per row, each already comma-joined), written atomically:
    the competitions this project writes itself (toy, folder) are read back by the readers below."""
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([header, *rows]) + "\n")


def is_valid_id(image_id: str) -> bool:
    return bool(ID_PATTERN.match(image_id))


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DataError(f"{path} does not exist; run `make data` (python -m solution data) first")
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) would otherwise become part of the first header
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; re-download or regenerate it") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise DataError(f"{path} is not a readable CSV ({reason}); re-download or regenerate it") from None
    if list(frame.columns[: len(columns)]) != columns:
        raise DataError(f"{path}: expected columns {','.join(columns)}, found {','.join(map(str, frame.columns))}")
    bad = frame.index[~frame["id"].str.match(ID_PATTERN)] if "id" in columns else []
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{path}: row {row + 2} has a malformed id '{frame['id'].iloc[row]}' (want 16 hex digits)")
    return frame


def _no_duplicates(path: Path, ids: pd.Series) -> None:
    repeated = ids[ids.duplicated()]
    if len(repeated):
        first = repeated.iloc[0]
        rows = [int(i) + 2 for i in ids.index[ids == first][:2]]
        raise DataError(f"{path} lists id {first} more than once (rows {rows[0]} and {rows[1]}); remove the "
                        "repeated rows")


def read_ids(path: str | Path) -> list[str]:
    """``index.csv`` / ``test.csv``: one ``id`` column, each id once."""
    frame = _read_csv(Path(path), ["id"])
    _no_duplicates(Path(path), frame["id"])
    return frame["id"].tolist()


def read_train(path: str | Path) -> pd.DataFrame:
    """``train.csv``: ``id,landmark_id`` (extra columns such as ``url`` are kept)."""
    frame = _read_csv(Path(path), ["id"])
    if "landmark_id" not in frame.columns:
        raise DataError(f"{path}: expected a landmark_id column, found {','.join(frame.columns)}")
    if not frame["landmark_id"].str.fullmatch(r"\d+").all():
        row = int((~frame["landmark_id"].str.fullmatch(r"\d+")).to_numpy().argmax())
        raise DataError(f"{path}: row {row + 2} has a non-integer landmark_id '{frame['landmark_id'].iloc[row]}'")
    frame["landmark_id"] = frame["landmark_id"].astype(int)
    return frame


def read_train_clean(path: str | Path) -> pd.DataFrame:
    """``train_clean.csv`` (``landmark_id,images``) exploded to ``id,landmark_id``."""
    frame = _read_csv(Path(path), ["landmark_id", "images"])
    for row, (landmark, images) in enumerate(zip(frame["landmark_id"], frame["images"]), start=2):
        if not landmark.isdigit():
            raise DataError(f"{path}: row {row} has a non-integer landmark_id '{landmark}'")
        if not images.strip():
            raise DataError(f"{path}: row {row} (landmark {landmark}) lists no images")
        bad = next((i for i in images.split() if not is_valid_id(i)), None)
        if bad is not None:
            raise DataError(f"{path}: row {row} has a malformed id '{bad}' (want 16 hex digits)")
    frame["id"] = frame["images"].str.split()
    frame = frame.explode("id")[["id", "landmark_id"]].reset_index(drop=True)
    frame["landmark_id"] = frame["landmark_id"].astype(int)
    return frame


def read_solution(path: str | Path) -> dict[str, tuple[list[str], str]]:
    """``retrieval_solution_v2.1.csv`` -> {test id: (relevant index ids, Usage)}."""
    frame = _read_csv(Path(path), ["id", "images", "Usage"])
    unknown = set(frame["Usage"]) - set(USAGES)
    if unknown:
        raise DataError(f"{path}: unknown Usage values {sorted(unknown)}; expected {USAGES}")
    return {
        row.id: ([] if row.images in ("", "None") else row.images.split(), row.Usage)
        for row in frame.itertuples(index=False)
    }


def check_images_exist(root: str | Path, split: str, ids: list[str], csv_name: str | Path) -> None:
    """Fail on the first id listed in ``csv_name`` whose image file is missing."""
    for image_id in ids:
        path = image_path(root, split, image_id)
        if not path.is_file():
            raise DataError(f"{path} is listed in {csv_name} but missing; re-run the download or `make data`")
