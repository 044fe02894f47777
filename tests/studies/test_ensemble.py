import json

import numpy as np
import pytest

from solution.cli import main
from solution.config import ConfigError, load_config
from solution.infer.ensemble import combine, members
from solution.model.net import build_net, save_checkpoint


def test_combine_weights_l2_normalised_parts():
    a = np.array([[1.0, 0.0]], np.float32)
    b = np.array([[0.0, 1.0, 0.0]], np.float32)
    out = combine([a, b], [1.0, 0.5])
    assert out.tolist() == [[1.0, 0.0, 0.0, 0.5, 0.0]]


def test_members_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="ensemble.members is empty"):
        members(load_config("toy", [f"run.dir={tmp_path}"]))
    cfg = load_config("toy", [f"run.dir={tmp_path}", "ensemble.members=[{run: nope, weight: 1.0}]"])
    with pytest.raises(FileNotFoundError, match="ensemble member nope"):
        members(cfg)


def test_ensemble_end_to_end_reuses_member_shards(tiny_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, head, layers in (("a", "remap", "[-2,-1]"), ("b", "gem", "[-1]")):
        cfg = load_config("toy", ["model.pretrained=none", f"model.head={head}", f"model.layers={layers}",
                                  "model.whiten_dim=0"])
        save_checkpoint(runs / name / "checkpoint.pt", build_net(cfg["model"]))
    common = ["--config", "toy", f"data.root={tiny_root}", f"run.dir={runs}", "run.name=ens", "run.workers=0",
              "infer.image_size=64", "infer.scales=[1]", "infer.flip=false", "infer.qe.enabled=true",
              "infer.dba.enabled=false", "ensemble.members=[{run: a, weight: 1.0}, {run: b, weight: 0.5}]",
              "ensemble.whiten_on=index", "ensemble.whiten_dim=8"]
    assert main(["submit", *common, "--out", str(tmp_path / "subs")]) == 0
    out = capsys.readouterr().out
    assert "| ensemble | qe.n=" in out and "| a alone |" in out and "| a alone, whitened as the ensemble |" in out
    report = json.loads((runs / "ens" / "ensemble.json").read_text())
    assert report["kind"] == "ensemble" and report["dim"] == 8 and report["tuned_on_validation"]
    assert set(report["rows"]) == {"ensemble", "a alone", "b alone", "a alone, whitened as the ensemble"}
    assert set(report["minus"]) == set(report["rows"]) - {"ensemble"}
    for row in report["rows"].values():  # every descriptor searched with its own settings, chosen on validation
        assert {"qe.n", "qe.alpha", "label_rerank.k"} <= set(row["tuned"]["settings"])
        assert "all" in row["tuned"]["validation"]
    search = report["weight_search"]  # the member weights were searched on validation: 2 members x 3 values
    assert search["trials"] == 6 and search["start"] == [1.0, 0.5] and len(search["best"]) == 2
    kept = search["best"] if search["adopt"] else search["start"]
    assert [m["weight"] for m in report["members"]] == kept and "Member weights searched on validation" in out
    saved = np.load(runs / "ens" / "whitening.npz")
    assert saved["weights"].tolist() == kept
    assert str(saved["weights_on"]) == ("validation" if search["adopt"] else "config")
    # compared, paired on test, with another submission (here the first one, made the same way: a tie at 0)
    first = tmp_path / "first.csv"
    first.write_bytes((tmp_path / "subs" / "toy-ens.csv").read_bytes())
    assert main(["ensemble", *common, f"ensemble.against={first}", "--out", str(tmp_path / "subs")]) == 0
    against = json.loads((runs / "ens" / "ensemble.json").read_text())["against"]
    assert against["minus"]["diff"] == 0 and not against["minus"]["excludes_zero"]
    assert f"| `{first}` | as it was made |" in capsys.readouterr().out
    whitening = np.load(runs / "ens" / "whitening.npz")
    assert whitening["weight"].shape == (8, 112 + 1280 + 1280) and str(whitening["fitted_on"]) == "index"
    shards = sorted((runs / "a" / "features").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert shards and main(["ensemble", *common, "--out", str(tmp_path / "subs")]) == 0
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # members' shards reused, not extracted again
    assert (tmp_path / "subs" / "toy-ens.csv").is_file()
    assert main(["viz", "retrieval", *common]) == 0  # `make submit` draws the gallery next
    assert (runs / "ens" / "plots" / "retrieval.png").is_file()


def _saved_whitening(path, names=("a", "b"), weights=(1.0, 0.5), rows=8, columns=24, fitted_on="index",
                     weight=None, **extra):
    np.savez(path, members=np.array(names), weights=np.array(weights),
             weight=np.ones((rows, columns)) if weight is None else weight, bias=np.zeros(rows),
             fitted_on=fitted_on, **extra)
    return path


@pytest.mark.parametrize("change, match", [
    ({"rows": 16}, "to 16"),                          # fitted for another whiten_dim
    ({"columns": 20}, "whitens 20 dimensions"),       # for members of other dimensions
    ({"fitted_on": "train"}, "fitted on train"),       # on another split
    ({"weights": (1.0, 1.0)}, "weights"),              # for other weights
])
def test_a_whitening_fitted_for_another_config_is_refused(tmp_path, change, match):
    from solution.infer.ensemble import CacheError, check_whitening, load_whitening

    path = _saved_whitening(tmp_path / "whitening.npz", **change)
    ens = {"whiten_dim": 8, "whiten_on": "index"}
    with pytest.raises(CacheError, match=match):
        check_whitening(path, load_whitening(path), [("a", 1.0), ("b", 0.5)], [16, 8], ens)
    good = _saved_whitening(tmp_path / "good.npz")
    check_whitening(good, load_whitening(good), [("a", 1.0), ("b", 0.5)], [16, 8], ens)
    if "weights" in change:  # weights the ensemble chose on validation are its own, not the config's
        tuned = _saved_whitening(tmp_path / "tuned.npz", weights_on="validation", **change)
        check_whitening(tuned, load_whitening(tuned), [("a", 1.0), ("b", 0.5)], [16, 8], ens)


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04garbage"])
def test_a_damaged_whitening_file_is_one_line(tmp_path, content):
    from solution.infer.ensemble import CacheError, load_whitening

    path = tmp_path / "whitening.npz"
    path.write_bytes(content)
    with pytest.raises(CacheError, match="not a whitening file written by `ensemble`"):
        load_whitening(path)
    _saved_whitening(path, weight=np.full((8, 24), np.nan))
    with pytest.raises(CacheError, match="not finite"):
        load_whitening(path)


@pytest.mark.parametrize("members_value", ["[{run: a, weight: .nan}]", "[{run: a, weight: .inf}]",
                                           "[{run: a, weight: -1}]", "[{run: a, weight: true}]",
                                           "[{run: 123}]", "[{run: ../a}]", "[{run: a}, {run: a}]",
                                           "[{run: a, extra: 1}]", "{run: a}"])
def test_member_forms_are_config_rules(tmp_path, members_value):
    with pytest.raises(ConfigError, match="ensemble.members"):
        load_config("toy", [f"run.dir={tmp_path}", f"ensemble.members={members_value}"])
