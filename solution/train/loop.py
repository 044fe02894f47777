"""The training run.

Each epoch: mine tuples with the current net (sharded over ranks) where a
triplet term needs them, train on aspect-ratio batches with ``train.loss`` (AMP
on GPU, DDP under torchrun), score the epoch on what ``train.select`` chooses
on (:mod:`.selection`), hand its row to :mod:`.epoch_log` and write a
checkpoint. Checkpoints are also written every ``train.checkpoint_every``
steps with the epoch's draw, so a killed run resumes at the exact step. The
result file and its table are :mod:`.report`'s.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..competition import load_competition
from ..config import ConfigError, resume_conflicts, run_dir, save_config
from ..data.datasets import TupleDataset, collate_tuples, worker_init
from ..data.images import warn_unreadable
from ..distributed import (
    Dist,
    broadcast_object,
    gather_rows,
    guarded,
    init_distributed,
    main_only,
    rank0_outcome,
    shutdown,
)
from ..infer.extract import extract_descriptors
from ..infer.pipeline import evaluate_net
from ..infer.search import knn
from ..metrics import format_interval, map_at_k, paired_bootstrap
from ..model.net import RetrievalNet, build_net, load_checkpoint, place, save_checkpoint
from ..runtime import data_workers, resolve_device, seed_everything
from ..viz import tuple_preview
from .epoch_log import EpochLog
from .initialise import initialise
from .loss import MarginClassifier, triplet_loss, triplet_stats
from .region_weights import moved_line, record_weights_moved
from .selection import selection_source
from .tuples import (
    Epoch,
    TrainSet,
    ValSet,
    count_spare_landmarks,
    draw_epoch,
    epoch_batches,
    epoch_image_size,
    image_shapes,
    load_train_set,
    micro_batches,
    split_validation,
    uses_arcface,
    uses_triplet,
)

log = logging.getLogger(__name__)

__all__ = ["TrainSet", "TrainingDiverged", "load_train_set", "train"]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; nothing after the last good checkpoint is saved."""


def freeze_batchnorm(module: nn.Module) -> None:
    """BatchNorm statistics stay at their pretrained values (tiny batches would ruin them)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def wrap_ddp(net: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP over ``net`` on ``device``. BatchNorm is frozen (eval mode, no running-statistics updates) and rank
    0's weights were broadcast once: there are no buffers to keep in step, so none are sent every forward."""
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def make_optimizer(net: RetrievalNet, cfg: dict, classifier: nn.Module | None = None) -> torch.optim.Optimizer:
    """Adam; the head at ``head_lr_mult`` (no decay on GeM p), REMAP's region and layer weights at their own
    ``region_lr`` (no decay: it would pull them to 0), whitening at ``whiten_lr_mult``, ArcFace's class centres
    (last, so a checkpoint without them keeps its groups' order) at ``arcface.lr_mult``."""
    region = list(getattr(net.head, "region_parameters", list)())
    no_decay = set(map(id, getattr(net.head, "no_decay_parameters", list)()))
    head = [p for p in net.head.parameters() if id(p) not in set(map(id, region))]
    head_lr, decay = cfg["lr"] * cfg["head_lr_mult"], cfg["weight_decay"]
    groups = [{"params": list(net.backbone.parameters()), "lr": cfg["lr"], "weight_decay": decay},
              {"params": [p for p in head if id(p) not in no_decay], "lr": head_lr, "weight_decay": decay},
              {"params": [p for p in head if id(p) in no_decay], "lr": head_lr, "weight_decay": 0.0},
              {"params": region, "lr": cfg["region_lr"], "weight_decay": 0.0}]
    if net.whiten is not None:
        groups.append({"params": list(net.whiten.parameters()), "lr": cfg["lr"] * cfg["whiten_lr_mult"],
                       "weight_decay": 0.0})
    if classifier is not None:
        groups.append({"params": list(classifier.parameters()), "lr": cfg["lr"] * cfg["arcface"]["lr_mult"],
                       "weight_decay": 0.0})
    return torch.optim.Adam([g for g in groups if g["params"]])


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: dict) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: exponential (``lr_decay``) or cosine to zero over ``epochs``."""
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg["epochs"]))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg["lr_decay"])


def amp_dtype(device: torch.device, mode: str, capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """bf16 on GPUs that compute in it natively (compute capability 8.0+: A100, L4, H100), fp16 with a gradient
    scaler below (T4 7.5, V100 7.0, P100 6.0: ``is_bf16_supported`` counts their slow emulation too);
    None (off) on CPU or with ``amp=off``."""
    if device.type != "cuda" or mode == "off":
        return None
    major, _ = capability or torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict | None) -> None:
    """Load a saved scaler state where there is one to load: a run saved with the scaler off (bf16 or CPU) and
    resumed on an fp16 GPU starts a fresh scaler instead of failing on the empty state."""
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)


def weights_checksum(net: nn.Module) -> float:
    """Sum of every parameter in float64: equal on all ranks when DDP kept them in step."""
    return float(sum(p.detach().double().sum() for p in net.parameters()))


class Trainer:
    def __init__(self, cfg: dict):
        self.cfg, self.tcfg = cfg, cfg["train"]
        self.out = run_dir(cfg)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.info: Dist = init_distributed(cfg["run"]["device"], cfg["train"]["dist_timeout_min"])
        device = resolve_device(cfg["run"]["device"])
        if device.type == "cuda" and self.info.active:
            device = torch.device("cuda", self.info.local_rank)
        self.device = device
        self.workers = data_workers(cfg["run"]["workers"])
        self.seed = cfg["run"]["seed"]
        self.amp = amp_dtype(self.device, self.tcfg["amp"])
        self.comp = load_competition(cfg["competition"])
        self.select = selection_source(self.comp, self.tcfg, cfg["data"]["root"])
        self.memo: dict[str, np.ndarray] = {}  # descriptors by split of the current weights; cleared when they change
        self.epoch_log = EpochLog(self.out, self.tcfg["epochs"], self.tcfg["tensorboard"] and self.info.main)
        self.warned: set[str] = set()  # unreadable images already named: each is warned about once per run
        self.classifier: MarginClassifier | None = None  # ArcFace's class centres, beside the net, never in it
        self.class_of = np.zeros(0, np.int64)  # train index -> class index of the classifier
        # training shapes by longest side: each size reads every train image's header once per run, not per epoch
        self.shapes: dict[int, list[tuple[int, int]]] = {}

    # ----------------------------------------------------------------- helpers

    def describe(self, net: RetrievalNet, paths: list[Path], desc: str, image_size: int,
                 batch_size: int = 32) -> np.ndarray:
        """Descriptors of ``paths`` at ``image_size``, each rank doing every world-th image, gathered on all
        ranks."""
        mine = paths[self.info.rank::self.info.world]

        def my_share():
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                return extract_descriptors(net, mine, image_size, batch_size, self.device,
                                           self.workers, desc=desc, warned=self.warned)[0]

        part = guarded(self.info, my_share)  # a rank that fails here stops the others before the gather
        if self.info.active:
            log.info("%s: rank %d described %d of %d images", desc, self.info.rank, len(mine), len(paths))
        return gather_rows(self.info, part, len(paths))

    def validate(self, net: RetrievalNet, val: ValSet | None) -> float | None:
        """Validation mAP@100 on rank 0 (None elsewhere, or without a validation set)."""
        return None if val is None else main_only(self.info, self._validate, net, val)

    def _validate(self, net: RetrievalNet, val: ValSet) -> float:
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            desc, _ = extract_descriptors(net, val.paths, self.cfg["infer"]["image_size"], 32, self.device,
                                          self.workers, desc="validate", warned=self.warned)
        _, order = knn(desc[val.queries], desc[val.index], 100)  # the search every split is ranked with
        predictions = {str(q): [str(val.index[j]) for j in row if j >= 0] for q, row in zip(val.queries, order)}
        solution = {str(q): [str(val.index[j]) for j in np.flatnonzero(val.labels[val.index] == val.labels[q])]
                    for q in val.queries}
        return map_at_k(predictions, solution)

    def test_map(self, net: RetrievalNet, queries: tuple[str, ...] = ("test", "val")) -> dict | None:
        """{query split: "all" scores} for test and, where the competition has one, validation, at one scale;
        described by every rank (a share each, gathered), scored on rank 0: with rank 0 alone describing
        GLDv2's 880k images the others would wait past any collective timeout. A split already described with
        these weights (the last epoch's validation pass) is not described again."""
        infer = self.cfg["infer"]

        def describe(paths, desc):
            if desc not in self.memo:
                self.memo[desc] = self.describe(net, paths, desc, infer["image_size"], infer["batch_size"])
            return self.memo[desc]

        scores = evaluate_net(net, self.comp, self.cfg["data"]["root"], infer, self.device, self.workers,
                              describe, score=self.info.main, queries=queries)
        if not self.info.main:
            return None
        return {split: parts["all"] for split, parts in scores.items() if parts.get("all")} or None

    def scored(self, net: RetrievalNet, queries: tuple[str, ...] = ("test", "val")) -> dict | None:
        """:meth:`test_map` on every rank (each describes a share, rank 0 alone scores), rank 0's scores shared."""
        result, error = None, None
        try:
            result = self.test_map(net, queries)
        except Exception as exc:
            if not (self.info.active and self.info.main):
                raise
            error = exc
        return rank0_outcome(self.info, result, error, share=True)

    def record_test(self, net: RetrievalNet, summary: dict, when: str) -> None:
        """``map_<when>``, its interval over queries and the per-query APs (for the paired gain) into ``summary``,
        and the same for the validation queries as ``val_map_<when>`` ..., which head comparisons choose on."""
        result = self.scored(net)
        if not result or "test" not in result:
            summary[f"map_{when}"] = None
            return
        for split, prefix in (("test", ""), ("val", "val_")):
            if split in result:
                scored = result[split]
                summary.update({f"{prefix}map_{when}": scored["map"], f"{prefix}ci_{when}": list(scored["ci"]),
                                f"{prefix}aps_{when}": scored["aps"]})
                log.info("%s mAP@100 %s training: %s over %d queries", "test" if split == "test" else "validation",
                         when, format_interval(scored["map"], scored["ci"]), scored["queries"])
        if when == "after" and summary.get("aps_before"):
            summary["gain"] = paired_bootstrap(summary["aps_after"], summary["aps_before"])

    def build_classifier(self, net: RetrievalNet, train_set: TrainSet, state: dict) -> MarginClassifier | None:
        """ArcFace's class centres over the train landmarks (with ``train.loss`` arcface or arcface+triplet):
        restored from the checkpoint on resume, else imprinted from the initialised net's descriptors (every
        rank describes a share; all get the same means) or left random, as ``train.arcface.init`` says."""
        if not uses_arcface(self.tcfg):
            return None
        arc = self.tcfg["arcface"]
        classes, self.class_of = np.unique(train_set.labels, return_inverse=True)
        classifier = MarginClassifier.from_config(net.dim, np.bincount(self.class_of), arc).to(self.device)
        if "classifier" in state:
            classifier.load_state_dict(state["classifier"])
        elif arc["init"] == "imprint":
            torch.manual_seed(self.seed)  # the sub-centres' spread: the same on every rank
            descriptors = self.describe(net, train_set.paths, "imprint classes", epoch_image_size(self.tcfg, 0))
            classifier.imprint(torch.from_numpy(descriptors), torch.from_numpy(self.class_of))
        log.info("ArcFace head: %d classes x %d sub-centre(s) on the %d-D descriptor, s=%s, margin %s",
                 len(classes), arc["subcenters"], net.dim, arc["scale"],
                 f"{classifier.margins.min():.3f}-{classifier.margins.max():.3f} by class frequency"
                 if arc["dynamic"] else arc["margin"])
        return classifier

    def save(self, net, optimizer, scheduler, scaler, epoch: int, step: int, summary: dict,
             plan: Epoch | None = None, steps: list[dict] | None = None) -> None:
        extra = {} if self.classifier is None else {"classifier": self.classifier.state_dict()}
        main_only(self.info, save_checkpoint, self.checkpoint_path, net, **extra, config=self.cfg, epoch=epoch,
                  step=step,
                  optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                  torch_rng=torch.get_rng_state(), summary=summary,
                  plan=plan.to_state() if plan is not None else None, steps=list(steps or []))

    def log_epoch(self, row: dict) -> None:
        main_only(self.info, self.epoch_log.write, row)

    # ----------------------------------------------------------------- the run

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.epoch_log.close()
            shutdown(self.info)

    def _run(self) -> dict:
        cfg, tcfg = self.cfg, self.tcfg
        started = time.perf_counter()
        seed_everything(self.seed)
        state: dict = {}
        if self.checkpoint_path.is_file():
            net, state = load_checkpoint(self.checkpoint_path)
            if "config" not in state and state.get("epoch", 0) > 0:  # a best.pt copied over it: trained, no state
                raise ConfigError(f"{self.checkpoint_path} holds weights but no training state (no config: a best.pt "
                                  "copied over it?); move it away to train afresh, or pick another run.name")
            # no config: `make kl`'s checkpoint (KL weights, no epoch yet), which training starts from
            conflicts = resume_conflicts(state["config"], cfg) if "config" in state else []
            if conflicts:
                raise ConfigError(f"{self.checkpoint_path} was trained with {', '.join(conflicts[:3])}"
                                  f"{' ...' if len(conflicts) > 3 else ''}; resume with its settings (only "
                                  "train.epochs may grow), or pick another run.name to start a new run")
            if state.get("epoch", 0) >= tcfg["epochs"] and "map_after" in state.get("summary", {}):
                log.info("run %s already finished %d epochs; nothing to do (train.epochs=N continues it; delete "
                         "%s to retrain)", cfg["run"]["name"], state["epoch"], self.checkpoint_path)
                return {"checkpoint": self.checkpoint_path, "finished": True, **state["summary"]}
            self._check_best(net)
            log.info("resuming %s at epoch %d, step %d", cfg["run"]["name"], state.get("epoch", 0) + 1,
                     state.get("step", 0))
        else:
            net = build_net(cfg["model"])
        # only now: a refused or finished run keeps the config.yaml of its checkpoint
        main_only(self.info, save_config, cfg, self.out / "config.yaml")
        net = place(net, self.device)
        full = load_train_set(self.comp, cfg["data"]["root"], cfg["data"]["train_list"])
        held_out = tcfg["val_landmarks"]
        if self.select == "val_queries":
            # the competition's own validation queries choose the epoch, so held-out train landmarks only add
            # a reported figure: on a small set (your own photos) every landmark trains instead, said once
            spare = count_spare_landmarks(full)
            if held_out > spare:
                log.warning("train.val_landmarks=%d is more than the %d train landmarks that can be held out: none "
                            "are (the validation queries choose the epoch)", held_out, spare)
                held_out = 0
        train_set, val = split_validation(full, held_out, self.seed)
        def initialise_on_rank0():
            initialise(net, train_set.paths, train_set.labels, cfg, self.device, self.workers, self.out / "plots",
                       self.warned)
            if "optimizer" not in state and not (self.out / "initial.pt").is_file():
                save_checkpoint(self.out / "initial.pt", net)  # off the shelf: what `transfer` compares against

        main_only(self.info, initialise_on_rank0)
        if self.info.active:  # every rank starts from rank 0's initialised weights
            payload = broadcast_object(self.info, (net.meta, {k: v.cpu() for k, v in net.state_dict().items()}))
            net.meta = payload[0]
            net.load_state_dict(payload[1])
        self.classifier = self.build_classifier(net, train_set, state)
        optimizer = make_optimizer(net, tcfg, self.classifier)
        scheduler = make_scheduler(optimizer, tcfg)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        if "optimizer" in state:  # a checkpoint from `kl` alone has weights but no training state yet
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_scaler(scaler, state.get("scaler"))
            torch.set_rng_state(state["torch_rng"])
        summary = dict(state.get("summary", {}))
        if tcfg["eval_before"] and "map_before" not in summary:
            self.record_test(net, summary, "before")
        model = net
        if self.info.active:
            model = wrap_ddp(net, self.device)
        start_epoch, start_step = state.get("epoch", 0), state.get("step", 0)
        for epoch in range(start_epoch, tcfg["epochs"]):
            resuming = epoch == start_epoch and start_step > 0 and state.get("plan")
            self.run_epoch(net, model, optimizer, scheduler, scaler, train_set, val, epoch, summary,
                           Epoch.from_state(state["plan"]) if resuming else None,
                           start_step if resuming else 0, list(state.get("steps", [])) if resuming else [])
        self.restore_selected(net, summary)
        moved = main_only(self.info, record_weights_moved, net, self.out / "initial.pt", self.out)
        if moved:
            summary["weights_moved"] = moved
            log.info("REMAP region weights moved from their KL start: %s", moved_line(moved))
        self.record_test(net, summary, "after")
        # wall time over every process that worked on this run, resumed ones included
        summary["seconds"] = round(summary.get("seconds", 0) + time.perf_counter() - started)
        self.save(net, optimizer, scheduler, scaler, tcfg["epochs"], 0, summary)
        log.info("rank %d final weights checksum %.12e", self.info.rank, weights_checksum(net))
        if self.classifier is not None:  # outside DDP: in step only because train_step averages its gradient
            log.info("rank %d final class centres checksum %.12e", self.info.rank, weights_checksum(self.classifier))
        return {"checkpoint": self.checkpoint_path, "finished": False, **summary}

    def run_epoch(self, net, model, optimizer, scheduler, scaler, train_set: TrainSet, val: ValSet | None,
                  epoch: int, summary: dict, plan: Epoch | None, start_step: int,
                  steps: list[dict]) -> None:
        tcfg, info = self.tcfg, self.info
        started = time.perf_counter()
        self.memo.clear()  # the weights are about to change
        size = epoch_image_size(tcfg, epoch)
        if plan is None:
            if size not in self.shapes:
                self.shapes[size] = image_shapes(train_set.paths, size, tcfg["aspect_buckets"])
            plan = draw_epoch(train_set, self.shapes[size], tcfg, self.seed, epoch,
                              lambda idx: self.describe(net, [train_set.paths[i] for i in idx], "mine", size))
        dataset = TupleDataset([[train_set.paths[i] for i in t] for t in plan.tuples], plan.shapes, tcfg,
                               seed=self.seed * 1000 + epoch)
        if epoch == 0 and start_step == 0:
            main_only(info, tuple_preview, dataset, min(4, len(dataset)), self.out / "plots" / "augmented_batch.png")
        batches = epoch_batches(plan, tcfg["tuples_per_step"], info.world, self.seed, epoch)
        # each optimiser step: this rank's share of the global batch, in forwards of tuples_per_forward
        steps_micro = [micro_batches(b, info.rank, info.world, tcfg["tuples_per_forward"])
                       for b in batches[start_step:]]
        loader = DataLoader(dataset, batch_sampler=[m for micro in steps_micro for m in micro],
                            num_workers=self.workers, collate_fn=collate_tuples,
                            pin_memory=self.device.type == "cuda", worker_init_fn=worker_init)
        net.train()
        if tcfg["freeze_bn"]:
            freeze_batchnorm(net.backbone)
        step = start_step
        pending: list[dict[str, torch.Tensor]] = []  # steps whose figures are still on the device
        forwards = iter(loader)
        bar = tqdm(zip(steps_micro, batches[start_step:]), desc=f"epoch {epoch + 1}", unit="step",
                   initial=start_step, total=len(batches), leave=False, disable=not info.main)
        for micro, batch in bar:
            loaded = [next(forwards) for _ in micro]
            bad = [p for _, unreadable in loaded for p in unreadable]
            warn_unreadable([Path(p) for p in bad], self.warned)
            labels = [torch.from_numpy(self.class_of[np.asarray([plan.tuples[t] for t in m])]) for m in micro] \
                if self.classifier is not None else [None] * len(micro)
            pending.append({**self.train_step(model, optimizer, scaler, [images for images, _ in loaded],
                                              len(batch), epoch, labels), "unreadable": torch.tensor(len(bad))})
            step += 1
            saving = bool(tcfg["checkpoint_every"]) and step % tcfg["checkpoint_every"] == 0 and step < len(batches)
            if len(pending) >= tcfg["sync_every"] or saving:
                self.flush(pending, steps, epoch)  # before a save: a diverged step is never checkpointed
                bar.set_postfix(loss=f"{np.mean([s['loss'] for s in steps]):.4f}")
            if saving:
                self.save(net, optimizer, scheduler, scaler, epoch, step, summary, plan, steps)
        self.flush(pending, steps, epoch)
        bar.close()
        scheduler.step()
        net.eval()
        means = {key: float(np.mean([s[key] for s in steps])) if steps else math.nan
                 for key in ("loss", "d_pos", "d_neg", "easy_frac", *(("arcface",) if self.classifier else ()))}
        unreadable = sum(s.get("unreadable", 0) for s in steps)
        if unreadable:
            log.warning("epoch %d: %d unreadable training images were replaced by zeros (named above)",
                        epoch + 1, unreadable)
        row = {"epoch": epoch + 1, "loss": round(means.pop("loss"), 5), "val_map": self.validate(net, val),
               "tuples": len(plan.tuples), "unreadable": unreadable, **{k: round(v, 4) for k, v in means.items()},
               **{k: round(v, 2) for k, v in plan.stats.items()},
               "lr": round(optimizer.param_groups[0]["lr"], 8), "size": size,
               "epoch_s": round(time.perf_counter() - started, 1)}
        score = self.selection_score(net, row)
        if row["val_map"] is not None:
            row["val_map"] = round(row["val_map"], 4)
        self.log_epoch(row)
        chosen = summary.get("selected")
        if score is not None and (not chosen or score > chosen["score"]):  # a tie keeps the earlier epoch
            summary["selected"] = {"epoch": epoch + 1, "score": score, "on": self.select}
            main_only(self.info, save_checkpoint, self.out / "best.pt", net, epoch=epoch + 1, score=score)
        self.save(net, optimizer, scheduler, scaler, epoch + 1, 0, summary)

    def selection_score(self, net: RetrievalNet, row: dict) -> float | None:
        """This epoch's score on what ``train.select`` chooses on (the same on every rank), None for last. The
        validation queries' pass also goes into ``row`` (and the curves) as ``val_queries_map``."""
        if self.select == "val_queries":
            scored = self.scored(net, ("val",)) or {}
            score = scored["val"]["map"] if "val" in scored else None
            row["val_queries_map"] = None if score is None else round(score, 4)
            return score
        if self.select == "val_landmarks":
            return broadcast_object(self.info, row["val_map"])  # rank 0 validates alone
        return None

    def _check_best(self, net: RetrievalNet) -> None:
        """A resumed run's ``best.pt`` must hold this network: one of another head would fail at the end, after
        the epochs it trained."""
        best = self.out / "best.pt"
        if not best.is_file():
            return
        try:
            held = load_checkpoint(best)[0].state_dict()
        except Exception as exc:  # noqa: BLE001 - any unreadable best.pt is the same one-line answer
            raise ConfigError(f"{best} cannot be read ({type(exc).__name__}); delete it (rm {best}) to "
                              "resume") from None
        mine = net.state_dict()
        if held.keys() != mine.keys() or any(held[k].shape != mine[k].shape for k in mine):
            raise ConfigError(f"{best} holds another network than {self.checkpoint_path} (another head or backbone); "
                              f"delete it (rm {best}) to resume, or pick another run.name")

    def restore_selected(self, net: RetrievalNet, summary: dict) -> None:
        """Load the selected epoch's weights (``best.pt``, rank 0's, sent to every rank) when it is not the last;
        with ``train.select=last`` record that the last was kept."""
        if self.select == "last":
            summary["selected"] = {"epoch": self.tcfg["epochs"], "score": None, "on": "last"}
            return
        chosen = summary.get("selected")
        if not chosen or chosen["epoch"] == self.tcfg["epochs"]:
            return
        def best_weights() -> dict:  # read on rank 0 only: other nodes may not share its disk
            return load_checkpoint(self.out / "best.pt")[0].state_dict()

        weights = main_only(self.info, best_weights)
        net.load_state_dict(broadcast_object(self.info, weights))
        self.memo.clear()
        log.info("kept epoch %d of %d: the best on %s (%.4f); its weights replace the last epoch's",
                 chosen["epoch"], self.tcfg["epochs"], chosen["on"], chosen["score"])

    def _kept(self) -> str:
        if self.checkpoint_path.is_file():
            return f"the last good checkpoint is kept ({self.checkpoint_path})"
        return "no checkpoint had been written yet"

    def flush(self, pending: list[dict[str, torch.Tensor]], steps: list[dict], epoch: int) -> None:
        """Read the pending steps' figures back in one transfer (the only host synchronisation of training
        steps), raise if any step diverged, and move them to ``steps`` as floats."""
        if not pending:
            return
        keys = list(pending[0])
        values = torch.stack([torch.stack([step[k].float().to(self.device) for k in keys]) for step in pending])
        rows = values.cpu().tolist()
        pending.clear()
        for row in rows:
            figures = dict(zip(keys, row))
            if not figures.pop("finite"):
                if not math.isfinite(figures["loss"]):
                    raise TrainingDiverged(f"loss became {figures['loss']} in epoch {epoch + 1}; {self._kept()}; "
                                           "lower train.lr and run again")
                raise TrainingDiverged(f"the gradient norm became inf or nan in epoch {epoch + 1}; {self._kept()}; "
                                       "lower train.lr or train.grad_clip and run again")
            figures["unreadable"] = int(figures["unreadable"])
            steps.append(figures)

    def train_step(self, model, optimizer, scaler, forwards: list[torch.Tensor], global_tuples: int,
                   epoch: int, labels: list[torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """One optimiser step over this rank's ``forwards`` (micro-batches of tuples), gradients accumulated.

        Each forward's mean loss is weighted by its share of the step's ``global_tuples`` (times the world,
        since DDP averages over ranks), so the step's gradient is the mean over every tuple of the global
        batch, however it was split across ranks and forwards. DDP reduces gradients on the last forward only.

        The loss is ``train.loss``: the triplet over each tuple, ArcFace over every image of the tuples (class
        indices in ``labels``, one tensor per forward), or their sum with ArcFace weighted by
        ``train.arcface.weight``. The class centres are not inside DDP: their gradient is averaged over the ranks
        here, after the last forward, as DDP averages the net's.

        Nothing here waits for the GPU: the figures come back as 0-d device tensors, ``finite`` among them,
        for :meth:`flush` to read every ``train.sync_every`` steps and before every save. A diverged step may
        leave NaN weights for up to that many steps, but the flush raises before anything is saved, so the
        last good checkpoint stays the last one written.
        """
        optimizer.zero_grad(set_to_none=True)
        weight = self.info.world / global_tuples
        total = torch.zeros((), device=self.device)
        stats: dict[str, torch.Tensor] = {}
        tuples = sum(len(f) for f in forwards)
        labels = labels or [None] * len(forwards)
        triplet, classifier = uses_triplet(self.tcfg), self.classifier
        for i, batch in enumerate(forwards):
            b, n = batch.shape[:2]
            last = i == len(forwards) - 1
            sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                    images = batch.flatten(0, 1).to(self.device, non_blocking=True)
                    descriptors = model(images).float().view(b, n, -1)
                loss = torch.zeros((), device=self.device)
                if triplet:
                    loss = loss + triplet_loss(descriptors[:, 0], descriptors[:, 1], descriptors[:, 2:],
                                               self.tcfg["margin"])
                if classifier is not None:
                    arc = classifier(descriptors.flatten(0, 1), labels[i].flatten().to(self.device))
                    loss = loss + self.tcfg["arcface"]["weight"] * arc
                    stats["arcface"] = stats.get("arcface", 0.0) + arc.detach() * (b / tuples)
                scaler.scale(loss * (b * weight)).backward()
            total += loss.detach() * b
            for key, value in triplet_stats(descriptors[:, 0], descriptors[:, 1], descriptors[:, 2:],
                                            self.tcfg["margin"]).items():
                stats[key] = stats.get(key, 0.0) + value * (b / tuples)
        check = total / tuples
        if self.info.active:  # every rank must see a divergence together, or the others would hang
            torch.distributed.all_reduce(check)
            check /= self.info.world
        if classifier is not None and self.info.active:
            for p in classifier.parameters():
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.info.world
        scaler.unscale_(optimizer)
        # the net's norm alone: the class centres' gradient (s = 30 logits) would set the clip for the backbone
        norm = nn.utils.clip_grad_norm_(model.parameters(), self.tcfg["grad_clip"])
        # With the fp16 scaler an infinite gradient is routine (the scaler skips that step); without it, the
        # step would write NaN into every weight. DDP has averaged the gradients: every rank sees one norm.
        finite = torch.isfinite(check) & (torch.isfinite(norm) if not scaler.is_enabled() else True)
        scaler.step(optimizer)
        scaler.update()
        project = getattr(getattr(model, "module", model).head, "project_", None)
        if project is not None:  # REMAP's weights back to >= 0 (the same on every rank)
            project()
        return {"loss": check, "finite": finite, **stats}


def train(cfg: dict) -> dict:
    """Run (or resume) training as configured; returns a summary with test mAP before and after."""
    return Trainer(cfg).run()

