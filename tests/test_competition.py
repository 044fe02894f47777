import pytest

from solution.competition import COMPETITION_ROOT, available, load_competition
from solution.config import ConfigError


def test_toy_is_described():
    comp = load_competition("toy")
    assert comp.slug == "toy" and comp.source == "toy" and comp.kind == "csv"
    assert comp.metric["k"] == 100
    assert comp.csv_path("inputs", "solution_csv").name == "retrieval_solution_v2.1.csv"
    assert "toy" in available()


def test_unknown_competition_lists_known():
    with pytest.raises(ConfigError, match="available: .*toy"):
        load_competition("landmark-retrieval-1999")


def test_real_competitions_fit_the_schema():
    assert {"toy", "landmark-retrieval-2019", "landmark-retrieval-2021"} <= set(available())
    gz = load_competition("landmark-retrieval-2019")
    assert gz.submission["file_suffix"] == ".csv.gz" and gz.source == "gldv2"
    code = load_competition("landmark-retrieval-2021")
    assert code.kind == "code" and code.metric["k"] == 100


def test_own_competitions_folder_and_folder_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("REMAP_COMPETITIONS", str(tmp_path))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "competition.yaml").write_text(
        (COMPETITION_ROOT / "folder-template.yaml").read_text().replace("SLUG", "mine").replace("TITLE", "t")
        .replace("val: 0.2", "val: 0"))
    comp = load_competition("mine")
    assert comp.source == "folder" and "mine" in available() and "toy" in available()
    assert comp.csv_path("inputs", "test_csv").name == "test.csv" and "val_csv" not in comp.data  # val: 0, none
    (tmp_path / "mine" / "competition.yaml").write_text("slug: mine\ntitle: a: b\n")
    with pytest.raises(ConfigError, match="competition.yaml is not valid YAML"):
        load_competition("mine")
