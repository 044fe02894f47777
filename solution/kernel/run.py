"""What the offline Kaggle kernel runs once the wheels are installed.

1. Find the competition, the model and (optionally) the train descriptors under the input root.
2. Make a time plan (a warmed-up probe of fresh images, plus search priced by a timed slice on the device)
   and give settings up (:mod:`.plan`'s ladder) only while the plan exceeds the notebook's limit, counted
   from the notebook's start.
3. On the public placeholder test set (at most ``public_max`` images, unless forced full) the memory each
   GPU will hold in the hidden run's searches is rehearsed at its counts (:mod:`.rehearse`), and the
   plan is made for the hidden run's counts (117,577 test, 761,757 index images), logged, and then rehearsed on the
   placeholder set and a sample of the index, in minutes: Kaggle swaps in the hidden test set and the full
   index only when it reruns the notebook for scoring, where it shows no log. So the probe, the plan and
   the search code the scoring run depends on have all run, and been read, after a commit.
4. Describe into one preallocated array of the index's dtype (no float32 copy of the whole set), search
   with the settings in force (plus label re-ranking when train descriptors are attached, memory-mapped as
   float16), write and validate ``submission.csv``. Each stage logs its planned and actual time.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, check_values
from ..gpu_archs import torch_serves
from ..infer.ensemble import ensemble_descriptors, load_whitening
from ..infer.features import describe_images, extraction_key, tta_tag
from ..infer.pipeline import id_rankings
from ..infer.retrieve import retrieve
from ..infer.search import ExactIndex, search
from ..infer.submission import validate_submission, write_submission
from ..model.net import load_checkpoint, place
from ..runtime import data_workers, keep_freed_memory
from .contract import MODEL_MARKER, TRAIN_MARKER, KernelError, infer_summary, sha256
from .discovery import find_competition, find_models, find_train_features
from .rehearse import gpu_cards, gpu_stage_runner, rehearse
from .schedule import (
    active_weights,
    choose_schedule,
    compared_pairs,
    output_seconds,
    time_output_units,
    time_search_unit,
)

log = logging.getLogger("solution.kernel")

PUBLIC_TEST_IMAGES = 1129  # the 2021 competition's visible test set
HIDDEN_TEST_IMAGES, HIDDEN_INDEX_IMAGES = 117_577, 761_757  # what the scoring rerun swaps in
DESCRIBE_CHUNK = 50_000  # images described per call: the float32 output of one call stays small


def list_images(split_dir: Path) -> tuple[list[str], list[Path]]:
    """Ids and paths of ``split_dir/a/b/c/<id>.jpg`` (Kaggle gives no index.csv or test.csv)."""
    paths = sorted(split_dir.glob("*/*/*/*.jpg"))
    return [p.stem for p in paths], paths


def load_train_features(input_root: Path, model_dir: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(descriptors, landmark ids, marker) of the attached train-descriptors dataset, or None when none is
    attached or it was described by another checkpoint (mixing nets would make the label votes meaningless)."""
    folder = find_train_features(input_root)
    if folder is None:
        return None
    marker = json.loads((folder / TRAIN_MARKER).read_text())
    model = json.loads((model_dir / MODEL_MARKER).read_text())
    if marker.get("checkpoint_sha256") != model.get("checkpoint_sha256"):
        log.warning("train descriptors in %s come from another checkpoint; label re-ranking is off", folder)
        return None
    # Memory-mapped and kept float16: at the 2021 size (1,580,470 x 2,048) a float32 copy would be 12.9 GB;
    # search widens a block at a time.
    descriptors = np.load(folder / marker["descriptors"], mmap_mode="r")
    labels = np.load(folder / marker["labels"])
    if len(descriptors) != len(labels):
        raise KernelError(f"{folder}: {len(descriptors)} descriptors but {len(labels)} labels; rebuild it")
    log.info("label re-ranking with %d train descriptors (%s) from %s", len(labels), marker["tta"], folder)
    return descriptors, labels, marker


def load_members(model_dir: Path, marker: dict, first, device: torch.device):
    """(nets, weights, whitening) of an ensemble model dataset, or None for a single checkpoint. ``first`` is
    the already loaded ``checkpoint.pt``; every other member is checked against its recorded sha256."""
    spec = marker.get("ensemble")
    if not spec:
        return None
    nets = []
    for member in spec["members"]:
        path = model_dir / member["checkpoint"]
        if member["checkpoint"] == "checkpoint.pt":
            nets.append(first)
            continue
        if not path.is_file() or sha256(path) != member["sha256"]:
            raise KernelError(f"ensemble member {member['run']}: {path} is missing or not the file `make kernel` "
                              "packed; rebuild the model dataset")
        nets.append(place(load_checkpoint(path)[0], device).eval())
    saved = load_whitening(model_dir / spec["whitening"])
    weights, whitening = saved.weights, saved.whitening
    log.info("ensemble of %d members (%s), weights %s, %s", len(nets), ", ".join(m["run"] for m in spec["members"]),
             weights, f"whitened to {whitening[0].shape[0]}-D" if whitening is not None else "not whitened")
    return nets, weights, whitening


class Prober:
    """Times TTA settings on fresh images: each probe takes images no earlier probe has read, so the page
    cache cannot flatter it; the descriptors of the last probe are kept for reuse."""

    def __init__(self, describe: Callable[[list[Path], dict, str], np.ndarray], pool: list[Path], probe: int,
                 warmup: int, clock: Callable[[], float]):
        self.describe, self.pool, self.probe, self.warmup, self.clock = describe, pool, probe, warmup, clock
        self.cursor = 0
        self.kept: tuple[str, int, np.ndarray] | None = None  # (extraction key, first pool position, descriptors)

    def _take(self, count: int) -> tuple[int, list[Path]]:
        if self.cursor >= len(self.pool):  # every image was read already: nothing fresh is left
            self.cursor = 0
        start = self.cursor
        self.cursor = min(len(self.pool), start + count)
        return start, self.pool[start:self.cursor]

    def __call__(self, infer_cfg: dict) -> float:
        if self.warmup and len(self.pool) > self.probe:
            self.describe(self._take(self.warmup)[1], infer_cfg, "warm-up")
        start, paths = self._take(self.probe)
        started = self.clock()
        descriptors = self.describe(paths, infer_cfg, "probe")
        seconds = self.clock() - started
        self.kept = (extraction_key(infer_cfg), start, descriptors)
        log.info("probe: %d fresh images in %.1fs with scales=%s flip=%s", len(paths), seconds,
                 infer_cfg["scales"], infer_cfg["flip"])
        return seconds / max(1, len(paths))

    def describe_all(self, infer_cfg: dict, dtype: str | np.dtype = np.float32,
                     chunk: int = DESCRIBE_CHUNK) -> np.ndarray:
        """Descriptors of the whole pool under ``infer_cfg`` in one preallocated ``dtype`` array, described
        ``chunk`` images at a time (so no full-size float32 array and no concatenated copy ever exist),
        reusing the last probe when it matches."""
        kept = self.kept if self.kept is not None and self.kept[0] == extraction_key(infer_cfg) else None
        probed = range(0) if kept is None else range(kept[1], kept[1] + len(kept[2]))
        out: np.ndarray | None = None
        if kept is not None:
            out = np.empty((len(self.pool), kept[2].shape[1]), dtype)
            out[probed.start:probed.stop] = kept[2]
        todo = [i for i in range(len(self.pool)) if i not in probed]
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            described = self.describe([self.pool[i] for i in rows], infer_cfg, "describe")
            if out is None:
                out = np.empty((len(self.pool), described.shape[1]), dtype)
            out[rows] = described
        return out


def search_and_write(test: np.ndarray, index: np.ndarray, test_ids: list[str], index_ids: list[str],
                     infer_cfg: dict, train: tuple[np.ndarray, np.ndarray, dict] | None, working: Path,
                     planned_s: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> Path:
    """Everything after extraction: search with post-processing (``index`` is handed over: DBA overwrites
    it), rankings, ``submission.csv`` written and validated. ``kernel-dryrun --synthetic`` runs this same
    function on descriptors of the real 2021 counts."""
    t0 = clock()
    neighbours, _ = retrieve(test, index, infer_cfg, *(train[:2] if train is not None else (None, None)),
                             in_place=True)
    log.info("stage search: %.0fs (planned %.0fs)", clock() - t0, planned_s)
    t0 = clock()
    rankings = id_rankings(test_ids, index_ids, np.asarray(neighbours))
    del neighbours
    out = write_submission(working / "submission.csv", rankings, test_ids)
    problems = validate_submission(out, test_ids, index_ids)
    if problems:
        raise KernelError(f"the submission failed validation: {'; '.join(problems[:3])}")
    log.info("stage write: %.0fs for %d rows", clock() - t0, len(test_ids))
    return out


def _write_sample(working: Path, rows: int, k: int) -> None:
    """Write and validate a submission of ``rows`` rows of ``k`` ids as the run does, in a file removed after:
    what :func:`time_output_units` times."""
    ids = [f"{i:016x}" for i in range(max(rows, k))]
    queries = ids[:rows]
    rankings = {q: ids[:k] for q in queries}
    working.mkdir(parents=True, exist_ok=True)
    out = write_submission(working / "plan-sample-submission.csv", rankings, queries)
    try:
        validate_submission(out, queries, ids)
    finally:
        out.unlink(missing_ok=True)


def notebook_clock(env: Mapping[str, str], clock: Callable[[], float] = time.time) -> Callable[[], float]:
    """Seconds since the notebook started (``KERNEL_STARTED_AT``, set by entry.py before the install),
    else since now."""
    started = env_number(env, "KERNEL_STARTED_AT", None, float)
    started = clock() if started is None else started
    return lambda: clock() - started


def read_model_marker(model_dir: Path) -> dict:
    """The model dataset's marker, checked: JSON of an object, the shipped checkpoint's sha256 equal to the one
    it records (a swapped checkpoint.pt ran to "valid"), and its ``infer`` settings within the config's
    rules. Each fault is one line naming the file and the rebuild."""
    path = model_dir / MODEL_MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KernelError(f"{path} cannot be read as JSON ({exc}); rebuild the model dataset with `make kernel`") \
            from None
    if not isinstance(marker, dict):
        raise KernelError(f"{path} holds a JSON {type(marker).__name__}, not the marker's object; rebuild the "
                          "model dataset with `make kernel`")
    shipped = marker.get("shipped_sha256")
    if shipped and sha256(model_dir / "checkpoint.pt") != shipped:
        raise KernelError(f"{model_dir / 'checkpoint.pt'} is not the checkpoint {path.name} was written for (its "
                          "sha256 differs); rebuild the model dataset with `make kernel` and version it")
    if marker.get("infer") is not None:
        try:
            check_values({"infer": marker["infer"]})
        except ConfigError as exc:
            raise KernelError(f"{path}: {exc}; rebuild the model dataset with `make kernel`") from None
    return marker


def check_cards() -> list[str]:
    """Each visible GPU's name, memory and compute capability, after checking that the installed torch has
    code for it (``torch.cuda.get_arch_list()``): a card it lacks would fail at the first forward with "no
    kernel image is available", after the install and the model load. One line names the card, the
    architectures torch has and the fix."""
    if not torch.cuda.is_available():
        return []
    archs = torch.cuda.get_arch_list()
    cards = []
    for gpu in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(gpu)
        capability = (props.major, props.minor)
        if not torch_serves(capability, archs):
            raise KernelError(f"GPU {gpu} is a {props.name} (compute capability {props.major}.{props.minor}), and "
                              f"torch {torch.__version__} here has code for {' '.join(archs) or 'no GPU'} only; pick "
                              "a card it runs on (`make kernel MACHINE_SHAPE=NvidiaTeslaT4`, the default)")
        cards.append(f"cuda:{gpu} {props.name} ({props.total_memory / 2**30:.1f} GiB, sm_{props.major}{props.minor})")
    return cards


def run(input_root: Path, working: Path, limit_s: float, full: bool = False, public_max: int = PUBLIC_TEST_IMAGES,
        public_index: int = 300, probe: int = 1000, warmup: int = 32, workers: int | None = None,
        clock: Callable[[], float] = time.perf_counter, elapsed: Callable[[], float] | None = None,
        hidden: tuple[int, int] = (HIDDEN_TEST_IMAGES, HIDDEN_INDEX_IMAGES)) -> Path:
    started = clock()
    elapsed = elapsed or (lambda: clock() - started)
    cards = check_cards()  # before any work: a card torch has no code for fails at the first forward
    log.info("GPUs: %s", "; ".join(cards) or "none (CPU)")
    workers = data_workers(workers)  # one process: every core of the notebook (4 vCPUs on Kaggle's GPU image)
    data = find_competition(input_root)
    models = find_models(input_root)
    if len(models) > 1:
        log.warning("%d model datasets attached; using %s", len(models), models[0])
    marker = read_model_marker(models[0])
    net, payload = load_checkpoint(models[0] / "checkpoint.pt")
    # The settings `make kernel` packed: its recipe's (CONFIG) or the checkpoint's own saved config.
    infer_cfg = copy.deepcopy(marker.get("infer") or payload["config"]["infer"])
    log.info("inference settings from %s: %s", marker.get("infer_source", "the checkpoint's config"),
             infer_summary(infer_cfg))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = place(net, device).eval()
    members = load_members(models[0], marker, net, device)
    test_ids, test_paths = list_images(data / "test")
    index_ids, index_paths = list_images(data / "index")
    if not test_paths or not index_paths:
        raise KernelError(f"{data} has {len(test_paths)} test and {len(index_paths)} index images; both must be "
                          "non-empty (<split>/a/b/c/<id>.jpg)")
    log.info("found %d test and %d index images in %s; model %s; %s", len(test_paths), len(index_paths), data,
             models[0], device)
    train = load_train_features(input_root, models[0]) if members is None else None
    infer_cfg["label_rerank"]["enabled"] = train is not None
    if members is None:
        dim, weights = net.dim, None

        def describe(paths, cfg, desc):
            return describe_images(net, paths, cfg, device, workers, desc, data_parallel=True)[0]
    else:
        nets, weights, whitening = members
        dim = whitening[0].shape[0] if whitening is not None else sum(n.dim for n in nets)

        def describe(paths, cfg, desc):
            # a member the plan dropped is a zero block: the whitening fitted for all members still applies
            parts = [describe_images(n, paths, cfg, device, workers, f"{desc} {i + 1}/{len(nets)}",
                                     data_parallel=True)[0] if w > 0 else
                     np.zeros((len(paths), n.dim), np.float32)
                     for i, (n, w) in enumerate(zip(nets, active_weights(cfg, weights)))]
            return ensemble_descriptors(parts, weights, whitening)

    public = not full and len(test_paths) <= public_max
    if public:
        keep = np.sort(np.random.default_rng(0).choice(len(index_paths), min(public_index, len(index_paths)),
                                                       replace=False))
        index_ids, index_paths = [index_ids[i] for i in keep], [index_paths[i] for i in keep]
        log.info("public run: %d test images <= KERNEL_PUBLIC_MAX=%d, so this is the placeholder test set: "
                 "planning for the hidden run (%d test, %d index images), then rehearsing that plan on %d index "
                 "images (KERNEL_FULL=1 runs everything)", len(test_paths), public_max, *hidden, len(index_paths))
    n_query, n_index = hidden if public else (len(test_paths), len(index_paths))
    n_train = 0 if train is None else len(train[1])
    if public:  # the scoring rerun's GPU paths first run here, at its counts, where the log can be read
        cards = gpu_cards() if device.type == "cuda" else None
        rehearse(n_query, n_index, n_train, dim, infer_cfg,
                 gpu_stage_runner(dim, infer_cfg["index"].get("dtype", "float32")) if cards else None, cards)
    pool = index_paths + test_paths
    prober = Prober(describe, pool, min(probe, max(1, len(pool) // 4)) if public else probe, warmup, clock)
    t0 = clock()
    index_dtype = infer_cfg["index"].get("dtype", "float32")
    unit = time_search_unit(dim, ExactIndex, search, index_dtype)
    per_row, per_byte = time_output_units(
        lambda rows: _write_sample(working, rows, infer_cfg["topk"]), infer_cfg["index"].get("spill_dir"))
    log.info("search priced at %.3g s per pair-dimension (%s index held on %s), writing at %.3g ms a row, "
             "spill at %.0f MB/s (timed in %.0fs)", unit, index_dtype, device, per_row * 1e3,
             1e-6 / max(per_byte, 1e-15), clock() - t0)

    def search_s(cfg: dict) -> float:
        return compared_pairs(n_query, n_index, n_train, cfg) * dim * unit

    def other_s(cfg: dict) -> float:
        return output_seconds(n_query, n_index, dim, cfg, per_row, per_byte)

    infer_cfg, plans = choose_schedule(infer_cfg, prober, search_s, n_query + n_index, elapsed, limit_s, weights,
                                   other_s)
    log.info("%s: %s -> projected %.0fs of %.0fs", "the hidden run would use" if public else "running with",
             infer_summary(infer_cfg), plans[-1].total_s, limit_s)
    if train is not None and train[2]["tta"] != tta_tag(infer_cfg):
        log.warning("train descriptors were made with %s, test and index with %s", train[2]["tta"],
                    tta_tag(infer_cfg))

    t0 = clock()
    described = prober.describe_all(infer_cfg, infer_cfg["index"].get("dtype", "float32"))
    index, test = described[:len(index_paths)], described[len(index_paths):]
    log.info("stage extract: %.0fs for %d images (%s), after %.0fs of probes", clock() - t0, len(pool),
             tta_tag(infer_cfg), t0 - started)
    planned = compared_pairs(len(test_paths), len(index_paths), n_train, infer_cfg) * dim * unit  # this run's
    out = search_and_write(test, index, test_ids, index_ids, infer_cfg, train, working, planned, clock)
    log.info("wrote %s (%d rows, %s run) in %.0fs; %.0fs since the notebook started", out, len(test_ids),
             "public" if public else "full", clock() - started, elapsed())
    return out


def run_from_env(input_root: Path, working: Path, env: Mapping[str, str]) -> Path:
    """``run`` with the KERNEL_* settings of the environment (see entry.py); a malformed one is one line."""
    keep_freed_memory(dict(env))
    return run(input_root, working, env_number(env, "KERNEL_TIME_LIMIT_S", 32400.0, float, above=0),
               full=env_flag(env, "KERNEL_FULL"),
               public_max=env_number(env, "KERNEL_PUBLIC_MAX", PUBLIC_TEST_IMAGES, int, above=0),
               public_index=env_number(env, "KERNEL_PUBLIC_INDEX", 300, int, above=0),
               probe=env_number(env, "KERNEL_PROBE", 1000, int, above=0), elapsed=notebook_clock(env))


def env_number(env: Mapping[str, str], name: str, default, kind=float, above: float | None = None):
    """``env[name]`` as ``kind`` (``default`` when unset or empty), finite and above ``above``."""
    text = env.get(name, "")
    if not str(text).strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or (above is not None and value <= above):
        kind_name = "a whole number" if kind is int else "a number"
        bound = f" above {above:g}" if above is not None else ""
        raise KernelError(f"{name}={text!r} is not {kind_name}{bound}; unset it for the default ({default})")
    return value


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """``env[name]`` as a switch: 1/true/yes/on or 0/false/no/off (or unset); anything else is one line."""
    text = str(env.get(name, "")).strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise KernelError(f"{name}={env.get(name)!r} is not a switch; use {name}=1 or {name}=0")
