"""Competitions described by ``competition/<slug>/competition.yaml``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError, plain_name

COMPETITION_ROOT = Path(__file__).resolve().parent.parent / "competition"
COMPETITIONS_ENV = "REMAP_COMPETITIONS"  # a folder of your own competition definitions, kept outside the repo
SOURCES = ("toy", "kaggle", "gldv2", "folder")
KINDS = ("csv", "code")
# A folder competition writes GLDv2's files itself: their names need not be spelled out in its YAML.
FOLDER_FILES = {"train_csv": "train.csv", "train_clean_csv": "train_clean.csv", "index_csv": "index.csv",
                "test_csv": "test.csv", "solution_csv": "retrieval_solution_v2.1.csv", "val_csv": "val.csv",
                "val_solution_csv": "val_solution.csv", "sample_submission": "sample_submission.csv"}


@dataclass(frozen=True)
class Competition:
    slug: str
    title: str
    kind: str
    source: str
    data: dict
    submission: dict
    metric: dict
    folder: Path

    def data_dir(self, data_root: str | Path) -> Path:
        return Path(data_root) / self.data["dir"]

    def csv_path(self, data_root: str | Path, key: str) -> Path:
        return self.data_dir(data_root) / self.data[key]


def competition_roots() -> list[Path]:
    """Where competitions are defined: ``$REMAP_COMPETITIONS`` first (if set), then the repo's ``competition/``."""
    extra = os.environ.get(COMPETITIONS_ENV, "").strip()
    return ([Path(extra).expanduser()] if extra else []) + [COMPETITION_ROOT]


def available() -> list[str]:
    return sorted({p.parent.name for root in competition_roots() for p in root.glob("*/competition.yaml")})


def load_competition(slug: str, root: Path | None = None) -> Competition:
    if not plain_name(slug):  # a slug is a folder name under competition/, never a path out of it
        raise ConfigError(f"competition '{slug}' is not a plain name; available: {', '.join(available()) or 'none'}")
    if root is None:
        root = next((r for r in competition_roots() if (r / slug / "competition.yaml").is_file()), COMPETITION_ROOT)
    path = root / slug / "competition.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown competition '{slug}'; available: {', '.join(available()) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(exc).split())[:160]}); fix it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a mapping of keys (slug, title, kind, source, data, ...); fix it")
    missing = {"slug", "title", "kind", "source", "data", "submission", "metric"} - set(raw)
    if missing:
        raise ConfigError(f"{path} lacks the keys {sorted(missing)}")
    if raw["source"] not in SOURCES or raw["kind"] not in KINDS:
        raise ConfigError(f"{path}: source must be one of {SOURCES} and kind one of {KINDS}")
    if raw["source"] == "folder":
        raw["data"] = {**FOLDER_FILES, **(raw["data"] or {})}
        if (raw["data"].get("split") or {}).get("val", 1) == 0:  # no validation queries asked for: none listed
            raw["data"].pop("val_csv")
            raw["data"].pop("val_solution_csv")
    return Competition(folder=path.parent, **raw)
