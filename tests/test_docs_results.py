"""The docs as they are checked in: every result table is its result file, and no mAP figure is typed by hand."""

import solution.studies.tables  # noqa: F401 - registers every result kind's table
from solution import results
from solution.results import BLOCK, documents, figures_outside_blocks, load_result, render, render_documents


def test_the_docs_tables_are_their_result_files():
    """Every result table in the README and docs/ is what `make results` renders from docs/results/."""
    assert render_documents(check=True) == []


def test_no_hand_typed_map_figure_in_the_docs():
    typed = {doc.name: figures_outside_blocks(doc.read_text()) for doc in documents()}
    assert {name: found for name, found in typed.items() if found} == {}


def test_every_filed_result_is_shown_somewhere():
    shown = {m["name"] for doc in documents() for m in BLOCK.finditer(doc.read_text())}
    filed = {p.name for p in (results.REPO / "docs" / "results").glob("*.json")}
    assert filed and filed <= shown
    for name in filed:
        render(load_result(results.REPO / "docs" / "results" / name))
