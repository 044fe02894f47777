"""The cap count: ImageNet lite0 puts region maxima at ReLU6's 6; an inner tap and an uncapped final map have
no cap to count."""

import json

from solution.cli import main


def _run(tiny_root, tmp_path, *extra):
    args = ["saturation", "--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            *extra, "--images", "12", "--sizes", "96"]
    assert main(args) == 0
    return json.loads((tmp_path / "toy-tiny/saturation.json").read_text())["rows"]


def test_imagenet_lite0_saturates_its_final_map_and_uncapping_removes_the_cap(tiny_root, tmp_path):
    inner, final = _run(tiny_root, tmp_path)
    assert inner["cap"] is None and "region_maxima" not in inner
    assert final["cap"] == 6.0 and 0 < final["cells"] < final["region_maxima"] < 1
    inner, final = _run(tiny_root, tmp_path, "model.uncap_final=true")
    assert final["cap"] is None and final["uncapped"]
