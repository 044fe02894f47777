import json
import re

import pytest

import solution.studies.tables  # noqa: F401 - registers every result kind's table
from solution.config import ConfigError
from solution.results import (
    add_result,
    figures_outside_blocks,
    load_result,
    provenance,
    render_documents,
    write_result,
)


def _submit_result() -> dict:
    part = {"map": 0.6065, "ci": [0.5717, 0.6427], "queries": 440}
    return {"run": "toy", "submission": "submissions/toy-toy.csv", "rows": 480, "scales": [1], "flip": False,
            "image_size": 192, "steps": ["qe"], "parts": {"Public": part, "Private": part, "all": part}}


def _project(tmp_path, body: str = "stale\n") -> tuple:
    (tmp_path / "docs").mkdir()
    write_result(tmp_path / "runs" / "toy" / "submit.json", "submit", _submit_result(), {"a": 1})
    filed = add_result(tmp_path / "runs" / "toy" / "submit.json", root=tmp_path)
    doc = tmp_path / "docs" / "results.md"
    doc.write_text(f"# Results\n\n<!-- results: {filed.name} -->\n{body}<!-- /results -->\n\nprose\n")
    (tmp_path / "README.md").write_text("front page\n")
    return filed, doc


def test_a_result_carries_its_provenance(tmp_path):
    path = write_result(tmp_path / "x.json", "submit", _submit_result(), {"b": 2, "a": 1})
    made = json.loads(path.read_text())["provenance"]
    assert made["command"].startswith("python -m solution ")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", made["commit"])
    assert made["config_sha1"] == provenance({"a": 1, "b": 2})["config_sha1"]  # key order does not matter
    assert made["config_sha1"] != provenance({"a": 1, "b": 3})["config_sha1"]


def test_blocks_are_regenerated_from_their_file_and_check_finds_drift(tmp_path):
    filed, doc = _project(tmp_path)
    assert filed.name == "submit-toy.json"
    assert render_documents(tmp_path, check=True) == [doc]
    assert "stale" in doc.read_text()  # check writes nothing
    assert render_documents(tmp_path) == [doc]
    text = doc.read_text()
    assert "0.6065 [0.5717, 0.6427]" in text and "Made by `python -m solution" in text
    assert text.endswith("<!-- /results -->\n\nprose\n")
    assert render_documents(tmp_path, check=True) == []
    result = json.loads(filed.read_text())
    result["provenance"]["written"] = "another time"  # provenance is not sealed: the block still matches
    filed.write_text(json.dumps(result))
    assert render_documents(tmp_path, check=True) == []
    result["parts"]["all"]["map"] = 0.5  # a figure edited by hand: told from a measured one
    filed.write_text(json.dumps(result))
    with pytest.raises(ConfigError, match="changed after it was measured"):
        render_documents(tmp_path, check=True)


def test_bad_result_files_are_one_line_errors(tmp_path):
    (tmp_path / "docs").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a result JSON"):
        add_result(bad, root=tmp_path)
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(ConfigError, match="no 'kind'"):
        load_result(bad)
    bad.write_text(json.dumps({"kind": "horoscope"}))
    with pytest.raises(ConfigError, match="says nothing of what made it"):
        add_result(bad, root=tmp_path)
    made = {"command": "python -m solution x", "commit": "abc"}
    bad.write_text(json.dumps({"kind": "horoscope", "provenance": made}))
    with pytest.raises(ConfigError, match="has no table"):
        add_result(bad, root=tmp_path)
    bad.write_text(json.dumps({"kind": "heads", "provenance": made}))  # a kind whose table needs its rows
    with pytest.raises(ConfigError, match="cannot be drawn as its table"):
        add_result(bad, root=tmp_path)
    assert not (tmp_path / "docs" / "results").exists()  # nothing was filed
    (tmp_path / "README.md").write_text("<!-- results: missing.json -->\nx\n<!-- /results -->\n")
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        render_documents(tmp_path)


def test_figures_typed_outside_blocks_are_found():
    text = "a 0.6065 here\n<!-- results: x.json -->\n0.1234 +0.0500\n<!-- /results -->\nratio 0.944, gain +0.0152\n"
    assert figures_outside_blocks(text) == ["0.6065", "+0.0152"]



def test_check_with_add_files_nothing_and_says_so(tmp_path, capsys):
    from solution.cli import main

    write_result(tmp_path / "submit.json", "submit", _submit_result(), {"a": 1})
    assert main(["results", "--check", "--add", str(tmp_path / "submit.json")]) != 0
    assert "--check only reports" in capsys.readouterr().err


def test_a_run_reproduces_the_figures_its_filed_result_shows(tmp_path):
    from solution.results import reproduces

    root = tmp_path / "repo"
    run = tmp_path / "runs" / "toy"
    write_result(run / "submit.json", "submit", _submit_result(), {"a": 1})
    (root / "docs" / "results").mkdir(parents=True)
    filed = root / "docs" / "results" / "submit-toy.json"
    filed.write_text((run / "submit.json").read_text())
    assert reproduces(run / "submit.json", root) == (filed, [])
    moved = _submit_result()
    moved["parts"]["all"] = {**moved["parts"]["all"], "map": 0.6066}
    write_result(run / "submit.json", "submit", moved, {"a": 2})  # another run: commit, time, config may differ
    _, differences = reproduces(run / "submit.json", root)
    assert differences == ["figure 7: 0.6066 in the run, 0.6065 in the docs"]
    with pytest.raises(ConfigError, match="no filed result .*submit-other.json"):
        write_result(tmp_path / "runs" / "other" / "submit.json", "submit", moved, {"a": 1})
        reproduces(tmp_path / "runs" / "other" / "submit.json", root)
