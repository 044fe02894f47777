"""Layered configuration: package defaults <- experiment YAML <- ``key=value`` overrides.

The defaults file lists every valid key, so an unknown key anywhere is an error
that names the key and the closest valid one. The resolved config is saved with
every run (``runs/<run>/config.yaml``) so a run can be reproduced from it alone.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_path

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"


class ConfigError(ValueError):
    """A user-facing configuration mistake (unknown key, bad value, missing file)."""


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, path + "."))
    return keys


def _unknown_key(path: str, valid: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(path, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{path}' in {source}{hint}")


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return None  # null defaults accept anything


def _check_type(path: str, default: Any, value: Any, source: str) -> Any:
    if isinstance(value, str) and isinstance(default, float) and _FLOAT.match(value):
        return float(value)  # YAML 1.1 reads 3e-4 as a string
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    want = _kind(default)
    if want is not None and value is not None and _kind(value) != want:
        raise ConfigError(f"config key '{path}' in {source} expects {want} like {default!r}, got {value!r}")
    return value


def merge(base: dict, update: dict, source: str, _prefix: str = "") -> dict:
    """Return ``base`` updated by ``update``; every key of ``update`` must exist in ``base``."""
    out = copy.deepcopy(base)
    valid = _flat_keys(base)
    for key, value in update.items():
        path = f"{_prefix}{key}"
        if key not in out:
            raise _unknown_key(path, [_prefix + k for k in valid], source)
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' in {source} is a section; give sub-keys, not a value")
            out[key] = merge(out[key], value, source, path + ".")
        else:
            out[key] = _check_type(path, out[key], value, source)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.epochs=2'`` -> (['train', 'epochs'], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value (example: train.epochs=2)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.problem})") from None
    return key.strip().split("."), value


def _nest(path: list[str], value: Any) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; experiment YAMLs live in {CONFIG_DIR}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def resolve_config_path(name: str | os.PathLike | None) -> Path | None:
    """A config is a path, or a name looked up in ``solution/configs`` (``toy`` -> toy.yaml)."""
    if name in (None, ""):
        return None
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    return candidate if candidate.is_file() else path


def load_config(experiment: str | os.PathLike | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults, then the experiment YAML, then overrides. Returns a plain nested dict."""
    cfg = read_yaml(DEFAULTS_FILE)
    path = resolve_config_path(experiment)
    if path is not None:
        cfg = merge(cfg, read_yaml(path), str(path))
        if cfg["run"]["name"] is None:
            cfg["run"]["name"] = path.stem
    for text in overrides:
        keys, value = parse_override(text)
        cfg = merge(cfg, _nest(keys, value), f"override '{text}'")
    if cfg["run"]["name"] is None:
        cfg["run"]["name"] = "default"
    return cfg


def save_config(cfg: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))


# What may differ between a run's checkpoint and a command that resumes it; everything else in model, data,
# train, competition and run.seed describes the checkpoint and must stay as it was.
RESUMABLE_CHANGES = ("train.epochs", "train.eval_before", "train.tensorboard", "train.checkpoint_every",
                     "run.workers", "run.device", "run.dir", "run.name")


def _flat_items(tree: dict, prefix: str = "") -> dict[str, Any]:
    items = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            items.update(_flat_items(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def resume_conflicts(saved: dict, new: dict) -> list[str]:
    """Keys whose value in ``new`` differs from the checkpoint's ``saved`` config and may not change on
    resume, as ``key=saved (now new)``. ``train.epochs`` may grow; ``infer`` may always change."""
    old, now = _flat_items(saved), _flat_items(new)
    conflicts = []
    for key in sorted(set(old) | set(now)):
        if key.split(".")[0] not in ("model", "data", "train", "competition", "run") or key in RESUMABLE_CHANGES:
            continue
        if old.get(key) != now.get(key):
            conflicts.append(f"{key}={old.get(key)!r} (now {now.get(key)!r})")
    return conflicts


def run_dir(cfg: dict) -> Path:
    return Path(cfg["run"]["dir"]) / cfg["run"]["name"]
