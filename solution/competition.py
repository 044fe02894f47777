"""Competitions described by ``competition/<slug>/competition.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError, plain_name

COMPETITION_ROOT = Path(__file__).resolve().parent.parent / "competition"
SOURCES = ("toy", "kaggle", "gldv2")
KINDS = ("csv", "code")


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


def available() -> list[str]:
    return sorted(p.parent.name for p in COMPETITION_ROOT.glob("*/competition.yaml"))


def load_competition(slug: str, root: Path = COMPETITION_ROOT) -> Competition:
    if not plain_name(slug):  # a slug is a folder name under competition/, never a path out of it
        raise ConfigError(f"competition '{slug}' is not a plain name; available: {', '.join(available()) or 'none'}")
    path = root / slug / "competition.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown competition '{slug}'; available: {', '.join(available()) or 'none'}")
    raw = yaml.safe_load(path.read_text())
    missing = {"slug", "title", "kind", "source", "data", "submission", "metric"} - set(raw)
    if missing:
        raise ConfigError(f"{path} lacks the keys {sorted(missing)}")
    if raw["source"] not in SOURCES or raw["kind"] not in KINDS:
        raise ConfigError(f"{path}: source must be one of {SOURCES} and kind one of {KINDS}")
    return Competition(folder=path.parent, **raw)
