import pytest

from solution.data.gldv2 import (
    DataError,
    check_images_exist,
    image_path,
    read_ids,
    read_solution,
    read_train,
    read_train_clean,
)


def test_image_path_layout(tmp_path):
    assert image_path(tmp_path, "index", "0123456789abcdef") == tmp_path / "index/0/1/2/0123456789abcdef.jpg"


def test_readers(tmp_path):
    (tmp_path / "train.csv").write_text("id,url,landmark_id\n0123456789abcdef,http://x,7\n")
    (tmp_path / "clean.csv").write_text("landmark_id,images\n7,0123456789abcdef 1123456789abcdef\n")
    (tmp_path / "sol.csv").write_text("id,images,Usage\naaaaaaaaaaaaaaaa,0123456789abcdef,Public\n"
                                      "bbbbbbbbbbbbbbbb,None,Ignored\n")
    (tmp_path / "index.csv").write_text("id\n0123456789abcdef\n")
    train = read_train(tmp_path / "train.csv")
    assert train["landmark_id"].tolist() == [7]
    assert read_train_clean(tmp_path / "clean.csv")["id"].tolist() == ["0123456789abcdef", "1123456789abcdef"]
    assert read_solution(tmp_path / "sol.csv") == {"aaaaaaaaaaaaaaaa": (["0123456789abcdef"], "Public"),
                                                   "bbbbbbbbbbbbbbbb": ([], "Ignored")}
    assert read_ids(tmp_path / "index.csv") == ["0123456789abcdef"]


@pytest.mark.parametrize("text, message", [
    ("name\n0123456789abcdef\n", "expected columns id"),
    ("id\nnot-an-id\n", "row 2 has a malformed id 'not-an-id'"),
])
def test_malformed_csv_named(tmp_path, text, message):
    (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_ids(tmp_path / "index.csv")


def test_non_integer_landmark(tmp_path):
    (tmp_path / "train.csv").write_text("id,landmark_id\n0123456789abcdef,seven\n")
    with pytest.raises(DataError, match="non-integer landmark_id 'seven'"):
        read_train(tmp_path / "train.csv")


def test_missing_csv_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="make data"):
        read_ids(tmp_path / "test.csv")


def test_missing_image_names_file_and_csv(tmp_path):
    with pytest.raises(DataError, match=r"0/1/2/0123456789abcdef\.jpg is listed in index\.csv"):
        check_images_exist(tmp_path, "index", ["0123456789abcdef"], "index.csv")
