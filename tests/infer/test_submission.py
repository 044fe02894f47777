import gzip

import pytest

from solution.infer.submission import SubmissionError, validate_submission, write_submission

TEST = ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]
INDEX = [f"{i:016x}" for i in range(200)]


def test_writer_every_test_id_top_k_and_gzip(tmp_path):
    rankings = {TEST[0]: INDEX[:150]}
    path = write_submission(tmp_path / "s.csv", rankings, TEST, max_predictions=100)
    lines = path.read_text().splitlines()
    assert lines[0] == "id,images" and len(lines) == 3
    assert len(lines[1].split(",")[1].split()) == 100 and lines[2] == f"{TEST[1]},"
    assert validate_submission(path, TEST, INDEX) == []
    gz = write_submission(tmp_path / "s.csv.gz", rankings, TEST)
    assert gzip.open(gz, "rt").read() == path.read_text()
    assert validate_submission(gz, TEST, INDEX) == []


@pytest.mark.parametrize("content, message", [
    ("id,imgs\n{a},\n{b},\n", "header is 'id,imgs'"),
    ("id,images\n{a},ffffffffffffffff\n{b},\n", "unknown index id 'ffffffffffffffff'"),
    ("id,images\n{a},{many}\n{b},\n", "101 images, at most 100"),
    ("id,images\n{a},\n{a},\n{b},\n", "appears more than once"),
    ("id,images\n{a},\n", "1 test ids have no row"),
    ("id,images\n{a},\nXYZ,\n{b},\n", "malformed id 'XYZ'"),
    ("id,images\n{a},00000000000000zz\n{b},\n", "malformed index id '00000000000000zz'"),
])
def test_each_bad_case_has_its_message(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content.format(a=TEST[0], b=TEST[1], many=" ".join(INDEX[:101])))
    problems = validate_submission(path, TEST, INDEX)
    assert len(problems) == 1 and message in problems[0]


def test_wrong_field_count(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(f"id,images\n{TEST[0]},a,b\n")
    with pytest.raises(SubmissionError, match="line 2 has 3 fields"):
        validate_submission(path, TEST, INDEX)


def test_nan_scores_are_never_written_as_a_validated_submission(tmp_path, monkeypatch):
    """#29: NaN rankings were written and called validated."""
    import numpy as np

    from solution.config import load_config
    from solution.infer import submit

    ids = ["a" * 16, "b" * 16]
    from types import SimpleNamespace

    monkeypatch.setattr(submit, "run_net", lambda cfg: (SimpleNamespace(meta={}), "cpu"))
    monkeypatch.setattr(submit, "search_competition", lambda *a: (
        np.array([[0, 1], [1, 0]]), np.array([[np.nan, 0.1], [0.3, 0.2]], np.float32), ids, ids))
    cfg = load_config("toy-tiny", [f"run.dir={tmp_path / 'runs'}"])
    with pytest.raises(submit.SubmissionError, match="NaN or inf scores for 1 queries"):
        submit.make_submission(cfg, tmp_path / "subs")
    assert not list((tmp_path / "subs").glob("*.csv"))
