"""The kaggle package boundary: credentials lookup, the missing-credentials line, no secrets in output."""

import pytest

from solution import kaggle_api


def test_credentials_sources_in_order(tmp_path):
    env = {"KAGGLE_CONFIG_DIR": str(tmp_path)}
    assert kaggle_api.credentials_source(env) is None
    assert kaggle_api.credentials_source({**env, "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}) == \
        "KAGGLE_USERNAME/KAGGLE_KEY"
    (tmp_path / "kaggle.json").write_text("{}")
    assert kaggle_api.credentials_source(env).endswith("kaggle.json")
    assert kaggle_api.credentials_source({**env, "KAGGLE_API_TOKEN": "t"}) == "KAGGLE_API_TOKEN"


def test_missing_credentials_is_one_line_and_never_imports_kaggle(tmp_path, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(kaggle_api, "_make_client", lambda: pytest.fail("must not reach the package"))
    with pytest.raises(kaggle_api.KaggleError, match="no Kaggle credentials found: put kaggle.json"):
        kaggle_api.submit("toy", tmp_path / "s.csv", "m")


class _FakeApi:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def competition_submit(self, **kwargs):
        if self.fail:
            raise self.fail
        self.calls.append(kwargs)


def test_submit_goes_through_the_boundary_and_redacts(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t-key")
    fake = _FakeApi()
    monkeypatch.setattr(kaggle_api, "_make_client", lambda: fake)
    kaggle_api.submit("landmark-retrieval-2019", tmp_path / "s.csv.gz", "run x")
    assert fake.calls == [{"file_name": str(tmp_path / "s.csv.gz"), "message": "run x",
                           "competition": "landmark-retrieval-2019"}]
    monkeypatch.setattr(kaggle_api, "_make_client", lambda: _FakeApi(RuntimeError("401 for key s3cr3t-key")))
    with pytest.raises(kaggle_api.KaggleError) as info:
        kaggle_api.submit("c", "f.csv", "m")
    assert "s3cr3t-key" not in str(info.value) and "***" in str(info.value)


def test_package_exit_becomes_our_error(monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "x")

    def exits():
        raise SystemExit(1)

    monkeypatch.setattr(kaggle_api, "_make_client", exits)
    with pytest.raises(kaggle_api.KaggleError, match="rejected the credentials in KAGGLE_API_TOKEN"):
        kaggle_api.client()


class _FakeDownloads:
    """Writes what the real package would: a zip for the whole competition, or single files."""

    def __init__(self, members):
        self.members, self.calls = members, []

    def competition_download_files(self, slug, path, quiet):
        import zipfile

        self.calls.append(("all", slug))
        with zipfile.ZipFile(f"{path}/{slug}.zip", "w") as handle:
            for name, data in self.members.items():
                handle.writestr(name, data)

    def competition_download_file(self, slug, name, path, quiet):
        self.calls.append(("one", name))
        (__import__("pathlib").Path(path) / name).write_bytes(self.members[name])


def test_competition_download_unzips_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "x")
    fake = _FakeDownloads({"train.csv": b"id,landmark_id\n", "test/0/1/2/0123456789abcdef.jpg": b"j",
                           "sample_submission.csv": b"id,images\n"})
    monkeypatch.setattr(kaggle_api, "_make_client", lambda: fake)
    kaggle_api.download_competition("c", tmp_path)
    assert (tmp_path / "test/0/1/2/0123456789abcdef.jpg").read_bytes() == b"j"
    assert not list(tmp_path.glob("*.zip"))
    kaggle_api.download_competition("c", tmp_path)  # second run: nothing fetched again
    assert fake.calls.count(("all", "c")) == 1
    kaggle_api.download_competition("c", tmp_path / "one", ["train.csv"])
    assert (tmp_path / "one/train.csv").is_file() and ("one", "train.csv") in fake.calls


def test_unzip_refuses_escaping_members(tmp_path):
    import zipfile

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../evil.txt", b"x")
    with pytest.raises(kaggle_api.KaggleError, match="would leave"):
        kaggle_api.safe_unzip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
