import json

import numpy as np
import pytest

from solution.config import ConfigError, _flat_items, load_config
from solution.studies import head_ablation
from solution.studies.head_ablation import RECIPES, VARIANTS, ablate_heads, variant_config


def test_variants_change_only_the_head_its_layers_and_the_run():
    cfg = load_config("toy")
    base = _flat_items(cfg)
    for variant in VARIANTS:
        changed = {k for k, v in _flat_items(variant_config(cfg, variant, 3)).items() if v != base[k]}
        allowed = {"run.name", "run.seed", "model.head", "model.layers", "model.kl.enabled", "model.remap_layers",
                   "model.kl.uniform_mix", "model.region_pool", "model.uncap_final"}
        recipe = set(_flat_items(RECIPES.get(variant, {}), "train."))  # a recipe variant changes its train keys
        assert changed <= allowed | recipe, variant
    nearest = variant_config(cfg, "remap-nearest", 0)["train"]
    assert (nearest["positives"], nearest["positive_view"]) == ("nearest", "whole")
    assert variant_config(cfg, "gem", 1)["run"]["name"] == "toy-heads-gem-s1"
    arcfaced = load_config("toy", ["train.loss=arcface"])  # a default that trains ArcFace: plain rows stay triplet
    assert variant_config(arcfaced, "gem", 0)["train"]["loss"] == "triplet"
    arcface = variant_config(cfg, "remap-gem-arcface", 0)
    assert (arcface["train"]["loss"], arcface["train"]["arcface"]["subcenters"], arcface["model"]["region_pool"]) \
        == ("arcface", 3, "gem")
    with pytest.raises(ConfigError, match="unknown head variant"):
        variant_config(cfg, "vlad", 0)


def _fake_train(quality, val_quality=None):
    """A stand-in for training: per-query APs drawn around each head's quality (on validation, around
    ``val_quality`` where given), fixed by seed and head."""
    val_quality = val_quality or {}
    def train(cfg):
        head = cfg["run"]["name"].split("-heads-")[1].rsplit("-s", 1)[0]
        rng = np.random.default_rng([cfg["run"]["seed"], len(head)])
        queries = [f"q{i}" for i in range(300)]
        noise = rng.normal(0, 0.2, (3, len(queries)))
        before = np.clip(0.2 + noise[0], 0, 1)
        after = np.clip(quality[head] + noise[1], 0, 1)
        val_after = np.clip(val_quality.get(head, quality[head]) + noise[2], 0, 1)
        return {"aps_before": dict(zip(queries, before)), "aps_after": dict(zip(queries, after)),
                "val_aps_after": dict(zip(queries, val_after)), "seconds": 7}
    return train


def test_table_compares_every_head_with_remap_on_the_same_queries(tmp_path, monkeypatch):
    quality = {"gem": 0.40, "mac": 0.35, "remap": 0.50}
    monkeypatch.setattr(head_ablation, "train", _fake_train(quality))
    cfg = load_config("toy", [f"run.dir={tmp_path}"])
    out = ablate_heads(cfg, ["gem", "mac"], [0, 1])
    assert [r["variant"] for r in out["rows"]] == ["remap", "gem", "mac"]  # REMAP added, rows best first
    gem = next(r for r in out["rows"] if r["variant"] == "gem")
    diff = gem["remap_minus_this"]["val_after"]
    assert 0.07 < diff["mean"] < 0.13 and diff["low"] > 0 and diff["excludes_zero"]
    assert diff["seeds"] == [2, 2] and len(gem["test_after"]["per_seed"]) == 2
    assert gem["train_seconds"] == 14  # two seeds
    text = (tmp_path / "toy-heads" / "heads.md").read_text()
    assert "On validation, REMAP is best" in text and "a win by the bar" in text
    assert "hierarchical bootstrap over 2 training seeds" in text
    assert json.loads((tmp_path / "toy-heads" / "heads.json").read_text())["best"] == "remap"


def test_verdict_says_plainly_when_remap_loses(tmp_path, monkeypatch):
    monkeypatch.setattr(head_ablation, "train", _fake_train({"gem": 0.55, "remap": 0.50}))
    out = ablate_heads(load_config("toy", [f"run.dir={tmp_path}"]), ["gem"], [0])
    assert out["best"] == "gem"
    assert "REMAP is not best: GeM (last layer) leads it" in (tmp_path / "toy-heads" / "heads.md").read_text()


def test_the_best_head_is_chosen_on_validation_and_test_is_only_reported(tmp_path, monkeypatch):
    # GeM is better on test, REMAP on validation: validation chooses
    monkeypatch.setattr(head_ablation, "train", _fake_train({"gem": 0.60, "remap": 0.45}, {"gem": 0.40, "remap": 0.55}))
    out = ablate_heads(load_config("toy", [f"run.dir={tmp_path}"]), ["gem"], [0])
    assert out["chosen_on"] == "val_after" and out["best"] == "remap"
    gem = next(r for r in out["rows"] if r["variant"] == "gem")
    assert gem["remap_minus_this"]["test_after"]["mean"] < 0 < gem["remap_minus_this"]["val_after"]["mean"]
    assert "On validation, REMAP is best" in (tmp_path / "toy-heads" / "heads.md").read_text()



def test_a_seed_named_twice_is_refused_before_any_training(capsys):
    """#29: `--seeds 0 0` trained one run and counted it as two seeds."""
    from solution.cli import main

    assert main(["ablate-heads", "--config", "toy-tiny", "--seeds", "0", "0", "--variants", "gem"]) != 0
    err = capsys.readouterr().err
    assert "--seeds 0 0 repeats 0" in err and "Traceback" not in err


def test_the_uncapped_variant_changes_only_the_final_activation():
    assert VARIANTS["remap-uncapped"][1] == {**VARIANTS["remap"][1], "uncap_final": True}
