"""Which epoch's weights a training run keeps (``train.select``), and how that choice is worded."""

from __future__ import annotations

import logging
from pathlib import Path

from ..competition import Competition
from ..config import ConfigError
from ..infer.pipeline import has_split, solution_key

log = logging.getLogger(__name__)


def selection_source(comp: Competition, tcfg: dict, data_root: str | Path | None = None) -> str:
    """What ``train.select`` means for this competition: val_queries, val_landmarks or last. A competition
    that lists validation queries whose ground truth is not on disk under ``data_root`` is refused: the
    epoch would be "chosen" on nothing and the last one kept without a word."""
    choice = tcfg["select"]
    if choice in ("auto", "val_queries") and has_split(comp, "val") and data_root is not None:
        missing = [p for p in (comp.csv_path(data_root, "val_csv"), comp.csv_path(data_root, solution_key("val")))
                   if not p.is_file()]
        if missing and choice == "val_queries":
            raise ConfigError(f"train.select=val_queries chooses the epoch on the validation queries, but "
                              f"{missing[0]} is missing; run `make data` again to restore it, or set "
                              "train.select=last")
        if missing:  # auto: the next best source, said aloud
            fallback = "val_landmarks" if tcfg["val_landmarks"] else "last"
            log.warning("train.select=auto: %s is missing, so the epoch is chosen by %s instead of the validation "
                        "queries (run `make data` again to restore it)", missing[0], fallback)
            return fallback
    if choice == "auto":
        return "val_queries" if has_split(comp, "val") else "val_landmarks" if tcfg["val_landmarks"] else "last"
    if choice == "val_queries" and not has_split(comp, "val"):
        raise ConfigError(f"train.select=val_queries, but competition {comp.slug} has no validation queries with "
                          "ground truth; use train.select=val_landmarks (the held-out train landmarks) or last")
    if choice == "val_landmarks" and not tcfg["val_landmarks"]:
        raise ConfigError("train.select=val_landmarks needs held-out landmarks: set train.val_landmarks > 0, or "
                          "train.select=last")
    return choice


def selection_words(selected: dict | None, tcfg: dict) -> str:
    """How the kept epoch was chosen, for the console and the result file."""
    epochs = tcfg["epochs"]
    if not selected or selected["on"] == "last":
        return (f"nothing: the last of train.epochs={epochs} epochs is kept (train.select=last), and test is only "
                "reported")
    source = ("the validation queries (one scale)" if selected["on"] == "val_queries"
              else f"the {tcfg['val_landmarks']} held-out train landmarks")
    return (f"{source}: epoch {selected['epoch']} of {epochs} is kept (mAP@100 {selected['score']:.4f} there); "
            "test is only reported")
