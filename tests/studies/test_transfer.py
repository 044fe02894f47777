import pytest

from solution.config import ConfigError, load_config
from solution.studies.transfer import summary_line, verdict


@pytest.mark.parametrize(("low", "high", "expected"), [(-0.01, 0.03, "pass"), (-0.06, -0.03, "fail"),
                                                        (-0.05, 0.01, "inconclusive"), (-0.019, -0.001, "pass")])
def test_non_inferiority_verdict_against_the_margin(low, high, expected):
    assert verdict({"low": low, "high": high}, -0.02) == expected


def test_summary_names_the_margin_and_the_verdict():
    result = {"off_the_shelf": {"map": 0.75, "ci": [0.65, 0.84]}, "fine_tuned": {"map": 0.72, "ci": [0.63, 0.81]},
              "change": {"diff": -0.028, "low": -0.068, "high": 0.012}, "queries": 176, "photographs": 11,
              "margin": -0.02, "verdict": "inconclusive"}
    line = summary_line(result)
    assert "176 hard views of 11 photographs" in line and "margin -0.02: inconclusive" in line
    assert "bootstrap over photographs" in line


def test_the_margin_is_a_loss_it_allows():
    assert load_config("toy")["train"]["transfer_margin"] == -0.02
    for bad in ("0.05", "-2", "abc"):
        with pytest.raises(ConfigError, match="train.transfer_margin"):
            load_config("toy", [f"train.transfer_margin={bad}"])
