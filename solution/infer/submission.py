"""Kaggle retrieval submissions (``id,images``): write, read and validate."""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..atomic import atomic_path
from ..data.gldv2 import is_valid_id

HEADER = ["id", "images"]


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or mis-score."""


def _open_text(path: Path, mode: str):
    encoding = "utf-8-sig" if mode == "r" else "utf-8"  # a byte-order mark is not part of the header
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", newline="", encoding=encoding)
    return open(path, mode, newline="", encoding=encoding)


def write_submission(path: str | Path, rankings: Mapping[str, Sequence[str]], test_ids: Iterable[str],
                     max_predictions: int = 100) -> Path:
    """Write one row per test id (in ``test_ids`` order), gzip when ``path`` ends in ``.gz``; atomic."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for test_id in test_ids:
        writer.writerow([test_id, " ".join(rankings.get(test_id, ())[:max_predictions])])
    with atomic_path(path) as tmp:
        if path.suffix == ".gz":
            with gzip.open(tmp, "wt", newline="") as handle:
                handle.write(buffer.getvalue())
        else:
            tmp.write_text(buffer.getvalue())
    return path


def read_submission(path: str | Path) -> tuple[list[str], list[tuple[int, str, list[str]]]]:
    """(header, rows as (line number, id, images)); only the CSV structure is checked here."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path} does not exist")
    try:
        with _open_text(path, "r") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != 2:
                    raise SubmissionError(f"{path}: line {line} has {len(row)} fields, want 2 (id,images)")
                rows.append((line, row[0].strip(), row[1].split()))
    except (UnicodeDecodeError, gzip.BadGzipFile, csv.Error, EOFError, OSError, zlib.error) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SubmissionError(f"{path}: not a readable CSV ({reason}); write it again") from None
    return header, rows


def submission_rankings(path: str | Path) -> dict[str, list[str]]:
    _, rows = read_submission(path)
    return {test_id: images for _, test_id, images in rows}


def validate_submission(path: str | Path, test_ids: Iterable[str], index_ids: Iterable[str],
                        max_predictions: int = 100) -> list[str]:
    """Every problem found, one line each (empty when valid). The first example of each kind is named."""
    header, rows = read_submission(path)
    problems: list[str] = []
    if [h.strip() for h in header] != HEADER:
        problems.append(f"{path}: header is '{','.join(header)}', want 'id,images'")
    test_set, index_set = set(test_ids), set(index_ids)
    seen: set[str] = set()
    first: dict[str, str] = {}

    def note(kind: str, message: str) -> None:
        first.setdefault(kind, message)

    for line, test_id, images in rows:
        if not is_valid_id(test_id):
            note("malformed", f"line {line}: malformed id '{test_id}' (want 16 lowercase hex digits)")
        elif test_id not in test_set:
            note("unknown test", f"line {line}: id '{test_id}' is not a test id")
        if test_id in seen:
            note("duplicate", f"line {line}: test id '{test_id}' appears more than once")
        seen.add(test_id)
        if len(images) > max_predictions:
            note("too many", f"line {line}: {len(images)} images, at most {max_predictions} allowed")
        for image in images:
            if not is_valid_id(image):
                note("malformed image", f"line {line}: malformed index id '{image}' (want 16 lowercase hex digits)")
            elif image not in index_set:
                note("unknown index", f"line {line}: unknown index id '{image}'")
    missing = [t for t in test_set if t not in seen]
    if missing:
        note("missing", f"{len(missing)} test ids have no row, e.g. '{sorted(missing)[0]}'")
    problems.extend(f"{path}: {message}" for message in first.values())
    return problems
