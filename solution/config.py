"""Layered configuration: package defaults <- experiment YAML <- ``key=value`` overrides.

The defaults file lists every valid key, so an unknown key anywhere is an error
that names the key and the closest valid one. The resolved config is saved with
every run (``runs/<run>/config.yaml``) so a run can be reproduced from it alone.
"""

from __future__ import annotations

import copy
import difflib
import math
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


# Keys that changed meaning: an old YAML fails with what to write instead, not with a guess.
RENAMED = {"train.batch_tuples": "train.batch_tuples was per rank; write train.tuples_per_step (the tuples of "
                                 "one optimiser step over all ranks, e.g. batch_tuples x GPUs) and "
                                 "train.tuples_per_forward (the most one GPU holds in a forward; more accumulates)"}


def _unknown_key(path: str, valid: list[str], source: str) -> ConfigError:
    if path in RENAMED:
        return ConfigError(f"unknown config key '{path}' in {source}: {RENAMED[path]}")
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
    if not text.isprintable():  # a control character, or bytes the locale could not decode (surrogates)
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise ConfigError(f"override '{shown}' holds a control character or bytes this locale cannot decode "
                          "(LANG/LC_ALL); retype it, or run under a UTF-8 locale such as C.UTF-8")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:  # a ReaderError has no .problem; its text says where
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"override '{text}': value is not valid YAML ({problem})") from None
    return key.strip().split("."), value


def _nest(path: list[str], value: Any) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; experiment YAMLs live in {CONFIG_DIR}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"config file {path} is not valid YAML: {problem}") from None
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
    competition = cfg["competition"]
    for text in overrides:
        keys, value = parse_override(text)
        cfg = merge(cfg, _nest(keys, value), f"override '{text}'")
    if cfg["run"]["name"] is None:
        # the YAML's name; a recipe run on another competition (competition=... on the command line) gets
        # its own folder, so training it on your photos never overwrites the recipe's own run
        name = path.stem if path is not None else "default"
        cfg["run"]["name"] = name if cfg["competition"] == competition else f"{name}-{cfg['competition']}"
    check_values(cfg)
    return cfg


def config_from_saved(saved: dict, overrides: list[str] | tuple = (), source: str = "saved config") -> dict:
    """A run's saved config (as a checkpoint carries it) on top of today's defaults, then overrides."""
    cfg = merge(read_yaml(DEFAULTS_FILE), saved, source)
    for text in overrides:
        keys, value = parse_override(text)
        cfg = merge(cfg, _nest(keys, value), f"override '{text}'")
    check_values(cfg)
    return cfg


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _positive(v: Any) -> bool:
    # finite: `.inf` passes `> 0`, and combine_p=.inf turned every descriptor to zeros
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _quality_range(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_positive_int(q) and q <= 100 for q in v) and v[0] <= v[1]


def _margin(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and -1 <= v <= 0


def _scale(v: Any) -> bool:
    if v in ("1/sqrt2", "sqrt2"):
        return True
    try:
        return math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def _scale_value(v: Any) -> float:
    return {"1/sqrt2": 2**-0.5, "sqrt2": 2**0.5}.get(v, None) or float(v)


def _one_of(*choices: str):
    return lambda v: v in choices


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def plain_name(v: Any) -> bool:
    """A file name of its own: no separator, no leading dot, so ``run.dir/<name>`` stays inside run.dir."""
    return isinstance(v, str) and PLAIN_NAME.fullmatch(v) is not None and ".." not in v


def _members(v: Any) -> bool:
    if not isinstance(v, list):
        return False
    names = []
    for entry in v:
        if not isinstance(entry, dict) or set(entry) - {"run", "weight"} or not plain_name(entry.get("run")):
            return False
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            return False
        names.append(entry["run"])
    return len(set(names)) == len(names)


# key -> (check, what a valid value is); applied to the resolved config, so a bad value anywhere (YAML or
# key=value) stops the command before any work, naming the key.
VALUE_RULES: dict[str, tuple[Any, str]] = {
    **{key: (_positive_int, "a whole number > 0") for key in (
        "train.tuples_per_epoch", "train.tuples_per_step", "train.tuples_per_forward",
        "train.sync_every",
        "train.neg_num", "train.pool_size", "train.positive_k",
        "infer.batch_size", "infer.topk", "infer.shard_size", "model.kl.images",
        "model.kl.pairs", "model.regions.levels", "train.epochs",
        "infer.qe.n", "infer.dba.k", "infer.superglobal.m", "infer.label_rerank.k", "infer.index.nlist",
        "infer.index.nprobe", "infer.index.m", "infer.diffusion.iterations", "infer.diffusion.kq")},
    **{key: (_count, "a whole number >= 0") for key in (
        "model.whiten_dim", "train.checkpoint_every", "train.val_landmarks", "run.seed",
        "data.toy_seed", "infer.superglobal.k")},
    **{key: (_positive, "a number > 0") for key in ("train.lr", "train.lr_decay", "model.gem_p", "infer.combine_p",
                                                    "train.dist_timeout_min")},
    "hardware.gpus": (_positive_int, "a whole number > 0"),
    **{key: (lambda v: _positive_int(v) and v >= 32, "a whole number >= 32 (pixels: below, a backbone's final map "
                                                     "is empty)") for key in ("train.image_size", "infer.image_size")},
    "model.kl.bins": (lambda v: _positive_int(v) and v >= 2, "a whole number >= 2 (one bin has no distribution)"),
    "train.transfer_margin": (_margin, "a number in [-1, 0] (the loss it allows)"),
    "train.rotate": (lambda v: _non_negative(v) and v <= 180, "degrees in [0, 180]"),
    **{key: (lambda v: _non_negative(v) and v <= 1, "a probability in [0, 1]") for key in (
        "train.gray_p", "train.blur_p", "train.jpeg_p")},
    "train.jitter": (lambda v: _non_negative(v) and v <= 1, "a number in [0, 1] (colour jitter's strength)"),
    "model.kl.smoothing": (_positive, "a number > 0 (an empty bin would make the KL infinite)"),
    "infer.index.recall_sample": (_positive_int, "a whole number > 0"),
    **{key: (_non_negative, "a number >= 0") for key in (
        "infer.label_rerank.min_confidence", "infer.label_rerank.insert_threshold")},
    "model.pretrained_file": (lambda v: v is None or (isinstance(v, str) and v != ""), "null or a file path"),
    "train.jpeg_quality": (_quality_range, "[low, high] with 1 <= low <= high <= 100"),
    "hardware.gpu": (lambda v: v is None or v in ("t4", "v100", "a100", "h100"), "null, t4, v100, a100 or h100"),
    **{key: (_non_negative, "a number >= 0") for key in (
        "train.margin", "train.weight_decay", "train.grad_clip", "train.head_lr_mult", "train.whiten_lr_mult",
        "train.region_lr",
        "model.whiten_shrinkage", "infer.qe.alpha", "infer.dba.alpha", "infer.superglobal.beta")},
    "run.device": (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                   "auto, cpu, cuda or cuda:N"),
    "run.workers": (lambda v: v is None or _count(v), "null (one per core, shared by the GPUs) or a whole number >= 0"),
    "train.schedule": (_one_of("exponential", "cosine"), "exponential or cosine"),
    "train.loss": (_one_of("triplet", "arcface", "arcface+triplet"), "triplet, arcface or arcface+triplet"),
    "train.arcface.init": (_one_of("imprint", "random"), "imprint or random"),
    "train.arcface.subcenters": (_positive_int, "a whole number > 0"),
    **{key: (_positive, "a number > 0") for key in ("train.arcface.scale", "train.arcface.weight",
                                                    "train.arcface.lr_mult", "model.region_p")},
    **{key: (lambda v: _non_negative(v) and v < math.pi / 2, "an angle in radians in [0, pi/2)")
       for key in ("train.arcface.margin", "train.arcface.dynamic_a", "train.arcface.dynamic_b")},
    "train.size_schedule": (lambda v: isinstance(v, list) and all(
        isinstance(e, list) and len(e) == 2 and all(_positive_int(x) for x in e) for e in v)
        and [e[0] for e in v] == sorted({e[0] for e in v}),
        "a list of [first_epoch, size] pairs with increasing first epochs, e.g. [[1, 128], [4, 192]]"),
    "model.region_pool": (_one_of("max", "gem"), "max or gem"),
    "model.kl.image_size": (lambda v: v is None or _positive_int(v), "null (infer.image_size) or a whole number > 0"),
    "train.negatives": (_one_of("hard", "random"), "hard or random"),
    "train.positives": (_one_of("random", "nearest"), "random or nearest"),
    "infer.label_rerank.vote": (_one_of("similarity", "yokoo"), "similarity or yokoo"),
    "infer.label_rerank.query": (_one_of("expanded", "own"), "expanded or own"),
    "infer.label_rerank.gate": (_one_of("both", "insert"), "both or insert"),
    "train.positive_view": (_one_of("crop", "whole"), "crop or whole"),
    "train.select": (_one_of("auto", "val_queries", "val_landmarks", "last"),
                     "auto, val_queries, val_landmarks or last"),
    "train.amp": (_one_of("auto", "off"), "auto or off"),
    "infer.combine": (_one_of("mean", "gem"), "mean or gem"),
    "infer.dtype": (_one_of("float16", "float32"), "float16 or float32"),
    "infer.index.type": (_one_of("flat", "ivfpq"), "flat or ivfpq"),
    "train.arcface.dynamic": (lambda v: isinstance(v, bool), "true or false"),
    "infer.index.dtype": (_one_of("float16", "float32"), "float16 or float32"),
    "infer.index.spill_dir": (lambda v: v is None or (isinstance(v, str) and v != ""),
                              "null (the temp folder) or a folder path"),
    "model.kl.uniform_mix": (lambda v: _non_negative(v) and float(v) <= 1, "a number from 0 to 1"),
    "infer.dba.scheme": (_one_of("alpha", "logspace"), "alpha or logspace"),
    "data.train_list": (_one_of("clean", "full"), "clean or full"),
    "data.toy_size": (_one_of("default", "tiny"), "default or tiny"),
    "model.remap_layers": (_one_of("sum", "learned", "l2"), "sum, learned or l2"),
    "ensemble.whiten_on": (_one_of("train", "index"), "train or index"),
    "ensemble.whiten_dim": (_count, "a whole number >= 0"),
    "ensemble.whiten_shrinkage": (_non_negative, "a number >= 0"),
    "ensemble.tune": (lambda v: isinstance(v, bool), "true or false"),
    "ensemble.against": (lambda v: v is None or (isinstance(v, str) and v != ""), "null or a submission CSV path"),
    "infer.diffusion.k": (lambda v: v is None or _positive_int(v), "null (scaled to the index) or a whole number > 0"),
    **{key: (lambda v: isinstance(v, bool), "true or false") for key in (
        "model.final_map", "model.tap_relu", "model.kl.enabled", "model.uncap_final")},
    "run.name": (plain_name, "a plain name (letters, digits, '.', '_', '-'; no '/' and no '..')"),
    "competition": (plain_name, "a competition folder's name under competition/, e.g. toy"),
    "ensemble.members": (_members, "a list of {run: <plain run name>, weight: <finite number > 0>}, each run once"),
    "infer.scales": (lambda v: isinstance(v, list) and len(v) > 0 and all(_scale(x) for x in v)
                     and len({round(_scale_value(x), 4) for x in v}) == len(v),
                     "a non-empty list of distinct numbers > 0, 1/sqrt2 or sqrt2, e.g. [1] or [0.7071,1,1.4142]"),
    "infer.diffusion.alpha": (lambda v: _positive(v) and v < 1, "a number in (0, 1) (1 or more diverges)"),
    "infer.diffusion.gamma": (_positive, "a number > 0"),
    "infer.diffusion.truncate": (_count, "a whole number >= 0 (0: the whole graph)"),
    "model.regions.overlap": (lambda v: _non_negative(v) and v < 1, "a number in [0, 1)"),
    "model.regions.reference": (lambda v: isinstance(v, list) and len(v) == 2 and all(_positive_int(x) for x in v),
                                "[width, height], two whole numbers > 0, e.g. [32, 24]"),
    "train.crop_scale": (lambda v: isinstance(v, list) and len(v) == 2 and all(_positive(x) for x in v)
                         and v[0] <= v[1] <= 1, "[low, high] with 0 < low <= high <= 1"),
    "model.layers": (lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(x, int) for x in v),
                     "a non-empty list of stage indices, e.g. [-2, -1]"),
}


# Rules between keys: (check on the flat config, the message when it fails).
PAIR_RULES: list[tuple[Any, str]] = [
    (lambda c: c["train.neg_num"] <= c["train.pool_size"],
     "train.neg_num={train.neg_num} negatives cannot be drawn from a pool of train.pool_size={train.pool_size} "
     "images; raise train.pool_size or lower train.neg_num"),
    (lambda c: not (c["infer.superglobal.enabled"] and c["infer.dba.enabled"]),
     "infer.superglobal and infer.dba are both on: SuperGlobal refines each item with its own database "
     "neighbours, which DBA has already averaged in, so the database would be smoothed twice; turn one off "
     "(infer.dba.enabled=false or infer.superglobal.enabled=false)"),
]


def check_values(cfg: dict) -> None:
    """Every rule of VALUE_RULES, then PAIR_RULES, on the resolved config; the first violation is a ConfigError
    naming the key."""
    items = _flat_items(cfg)
    for key, (valid, want) in VALUE_RULES.items():
        if key in items and not valid(items[key]):
            raise ConfigError(f"config key '{key}' must be {want}, got {items[key]!r}")
    check_pairs(cfg)


def check_pairs(cfg: dict) -> None:
    """Every rule of PAIR_RULES whose keys ``cfg`` holds (a whole config, or a section such as
    ``{"infer": ...}``, which is how ``retrieve`` checks the settings it is handed); a ConfigError otherwise."""
    items = _flat_items(cfg)
    for valid, message in PAIR_RULES:
        try:
            ok = valid(items)
        except KeyError:  # a partial config (a test's, or a section of one): nothing to compare
            continue
        if not ok:
            raise ConfigError(re.sub(r"\{([\w.]+)\}", lambda m: str(items[m.group(1)]), message))


def range_table() -> str:
    """The markdown table of every value rule, key by key: what ``docs/reliability.md`` shows, generated from
    VALUE_RULES (``make results`` rewrites it), so the docs cannot drift from the checks."""
    def cell(text: str) -> str:  # markdown would take <name> for a tag and | for a column
        return text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")

    rows = [f"| `{key}` | {cell(want)} |" for key, (_, want) in sorted(VALUE_RULES.items())]
    return "\n".join(["| key | must be |", "|---|---|", *rows])


def save_config(cfg: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))


# What may differ between a run's checkpoint and a command that resumes it; everything else in model, data,
# train, competition and run.seed describes the checkpoint and must stay as it was.
RESUMABLE_CHANGES = ("train.epochs", "train.eval_before", "train.tensorboard", "train.checkpoint_every",
                     "train.dist_timeout_min", "train.transfer_check", "train.transfer_margin",
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
        if key not in old:  # a key newer than the checkpoint: its default describes what the run did
            continue
        if old.get(key) != now.get(key):
            conflicts.append(f"{key}={old.get(key)!r} (now {now.get(key)!r})")
    return conflicts


def run_dir(cfg: dict) -> Path:
    """``<run.dir>/<run.name>``; a file standing where a folder must go is a ConfigError, before any work."""
    path = Path(cfg["run"]["dir"]) / cfg["run"]["name"]
    for folder in (path.parent, path):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder} is a file, not a folder; set run.dir (or run.name) to a folder")
    return path


def writable_folder(path: str | Path, what: str) -> Path:
    """``path`` as an output folder: created, and a file written and removed in it, before the work that fills
    it starts (a read-only or full disk fails here as an OSError, with nothing else written or replaced)."""
    import tempfile

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{what} {path}: {folder} is a file, not a folder; choose another {what}")
            break
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-") as probe:
        probe.write(b"x" * 4096)
        probe.flush()
    return path
