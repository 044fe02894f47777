"""The head x map-size study: the box counts it reports, and a run on the tiny set that reads no test."""

import json

from solution.cli import main
from solution.config import load_config
from solution.model.net import build_net
from solution.model.regions import region_grid
from solution.studies.geometry import map_geometry, table


def test_at_128_px_lite0s_map_is_4x3_and_the_41_boxes_collapse_to_15():
    cfg = load_config("toy", ["model.pretrained=none", "model.head=remap", "model.layers=[-2,-1]"])["model"]
    net = build_net(cfg).eval()
    small, large = map_geometry(net, 128, region_grid()), map_geometry(net, 384, region_grid())
    assert (small["final_map"], small["boxes"], small["distinct_boxes"]) == ("4x3", 41, 15)
    assert small["smallest_side_cells"] == 2
    assert large["final_map"] == "12x9" and large["distinct_boxes"] > 30


def test_the_study_scores_every_head_at_every_size_on_validation(tiny_root, tmp_path, capsys):
    args = ["geometry", "--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            "model.pretrained=none", "model.whiten_dim=8", "--sizes", "64", "96", "--heads", "rmac", "remap-gem",
            "gem", "--whiten-images", "30"]
    assert main(args) == 0
    out = json.loads((tmp_path / "toy-tiny/geometry.json").read_text())
    assert out["kind"] == "geometry" and out["sizes"] == [64, 96]
    assert {(r["head"], r["size"]) for r in out["rows"]} == {(h, s) for h in ("rmac", "remap-gem", "gem")
                                                             for s in (64, 96)}
    assert all(0 <= r["map"] <= 1 and r["ci"][0] <= r["map"] <= r["ci"][1] for r in out["rows"])
    assert "| R-MAC (last layer) |" in table(out) and "distinct boxes" in capsys.readouterr().out
