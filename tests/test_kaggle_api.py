"""The kaggle package boundary, against a fake that behaves like kaggle 2.2.5 (read from its source):

- errors come back as response objects, not exceptions (``competition_submit`` answers "Could not submit to
  competition"; ``dataset_create_new`` on a slug in use answers with ``error`` set and exits 0 in the CLI);
- an unknown dataset's status is an HTTP 404 raised by ``requests``;
- a new dataset or version is ``pending`` for a while before it is ``ready``;
- a large single file is saved as ``<name>.zip`` (the name comes from the download URL).
"""

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from solution import kaggle_api
from solution.cli import main


def _http_error(code):
    response = requests.Response()
    response.status_code = code
    return requests.HTTPError(f"{code} Client Error for url: https://www.kaggle.com/api/v1/...", response=response)


class FakeKaggle225:
    def __init__(self, existing=(), pending_polls=2, submit_fails=False, large=(), final_status=None,
                 invalid_sources=None):
        self.datasets = {ref: {"polls": 0, "versions": 1} for ref in existing}
        # final_status: a status the datasets end in instead of ready (kagglesdk's DatabundleVersionStatus names:
        # failed, deleted); invalid_sources: {"dataset"|"competition": [refs]} that a push cannot resolve
        self.final_status, self.invalid_sources = final_status, invalid_sources or {}
        self.pending_polls, self.submit_fails, self.large = pending_polls, submit_fails, set(large)
        self.calls, self.kernel_pushes = [], []
        self.files = {}

    # datasets
    def dataset_status(self, dataset, format=None):
        self.calls.append(("status", dataset))
        if dataset not in self.datasets:
            raise _http_error(404)
        state = self.datasets[dataset]
        state["polls"] += 1
        if state["polls"] <= self.pending_polls:
            return "pending"
        return self.final_status or "ready"

    def _ref(self, folder):
        return json.loads((Path(folder) / "dataset-metadata.json").read_text())["id"]

    def dataset_create_new(self, folder, public=False, quiet=False, convert_to_csv=True, dir_mode="skip",
                           ignore_patterns=None):
        ref = self._ref(folder)
        self.calls.append(("create", ref, dir_mode))
        if ref in self.datasets:
            return SimpleNamespace(status="error", error=f"The requested slug {ref} is already in use.", ref="",
                                   url="", invalidTags=[])
        self.datasets[ref] = {"polls": 0, "versions": 1}
        return SimpleNamespace(status="ok", error=None, ref=ref, url=f"https://www.kaggle.com/{ref}", invalidTags=[])

    def dataset_create_version(self, folder, version_notes, quiet=False, convert_to_csv=True,
                               delete_old_versions=False, dir_mode="skip", ignore_patterns=None):
        ref = self._ref(folder)
        self.calls.append(("version", ref, dir_mode))
        if ref not in self.datasets:
            return SimpleNamespace(status="error", error="Dataset not found", ref="", url="", invalidTags=[])
        self.datasets[ref].update(polls=0, versions=self.datasets[ref]["versions"] + 1)
        return SimpleNamespace(status="ok", error=None, ref=ref, url="", invalidTags=[])

    # kernels
    def kernels_push(self, folder, timeout=None, acc=None, no_run=False):
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        ready = all(self.datasets.get(ref, {"polls": 0})["polls"] > self.pending_polls
                    for ref in meta["dataset_sources"])
        self.kernel_pushes.append({"ref": meta["id"], "sources_ready": ready})
        # kaggle 2.2.5's ApiSaveKernelResponse: saved (no error) even when sources were dropped; the names are
        # snake_case properties with camelCase aliases
        invalid = {kind: self.invalid_sources.get(kind, []) for kind in ("dataset", "competition", "kernel")}
        return SimpleNamespace(error="", ref=meta["id"], url="", versionNumber=len(self.kernel_pushes),
                               invalidTags=[], invalidDatasetSources=invalid["dataset"],
                               invalid_dataset_sources=invalid["dataset"],
                               invalidCompetitionSources=invalid["competition"],
                               invalid_competition_sources=invalid["competition"],
                               invalidKernelSources=invalid["kernel"], invalid_kernel_sources=invalid["kernel"])

    # competitions
    def competition_submit(self, file_name, message, competition, quiet=False, sandbox=False):
        self.calls.append(("submit", competition))
        if self.submit_fails:
            return SimpleNamespace(message="Could not submit to competition", ref=0)
        return SimpleNamespace(message="Successfully submitted to Google Landmark Retrieval", ref=4242)

    def competition_submit_code(self, file_name, message, competition=None, kernel=None, kernel_version=None,
                                quiet=False):
        self.calls.append(("submit-code", competition, kernel, kernel_version))
        if self.submit_fails:
            return SimpleNamespace(message="Submission not allowed: the notebook version failed", ref=0)
        return SimpleNamespace(message="Successfully submitted", ref=77)

    def competition_download_file(self, competition, file_name, path=None, force=False, quiet=False, unzip=False):
        data = self.files[file_name]
        target = Path(path) / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        if file_name in self.large:  # served compressed: saved under the URL's name, <name>.zip
            with zipfile.ZipFile(f"{target}.zip", "w") as handle:
                handle.writestr(Path(file_name).name, data)
        else:
            target.write_bytes(data)

    def competition_download_files(self, competition, path=None, force=False, quiet=True, unzip=False):
        self.calls.append(("all", competition))
        with zipfile.ZipFile(Path(path) / f"{competition}.zip", "w") as handle:
            for name, data in self.files.items():
                handle.writestr(name, data)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "s3cr3t-token")


def _use(monkeypatch, fake):
    monkeypatch.setattr(kaggle_api, "_make_client", lambda: fake)
    return fake


def test_credentials_sources_in_the_package_order(tmp_path):
    home, config = tmp_path / "home", tmp_path / "config"
    (home / ".kaggle").mkdir(parents=True)
    config.mkdir()
    env = {"KAGGLE_CONFIG_DIR": str(config)}
    assert kaggle_api.credentials_source(env, home, 2) is None
    assert kaggle_api.credentials_source({**env, "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home, 2) == \
        "KAGGLE_USERNAME/KAGGLE_KEY"
    (config / "kaggle.json").write_text("{}")
    assert kaggle_api.credentials_source(env, home, 2) == str(config / "kaggle.json")
    # access_token sits at a fixed path: KAGGLE_CONFIG_DIR does not move it, and it comes before kaggle.json
    (config / "access_token").write_text("t")
    assert kaggle_api.credentials_source(env, home, 2) == str(config / "kaggle.json")
    (home / ".kaggle" / "access_token").write_text("t")
    assert kaggle_api.credentials_source(env, home, 2) == str(home / ".kaggle" / "access_token")
    assert kaggle_api.credentials_source(env, home, 1) == str(config / "kaggle.json")  # 1.x knows no tokens
    assert kaggle_api.credentials_source({**env, "KAGGLE_API_TOKEN": "t"}, home, 2) == "KAGGLE_API_TOKEN"


def test_kaggle_json_falls_back_to_xdg_when_dot_kaggle_is_absent(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "kaggle").mkdir(parents=True)
    (home / ".config" / "kaggle" / "kaggle.json").write_text("{}")
    assert kaggle_api.credentials_source({}, home, 2) == str(home / ".config" / "kaggle" / "kaggle.json")


def test_missing_credentials_is_one_line_and_never_imports_kaggle(tmp_path, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(kaggle_api, "_make_client", lambda: pytest.fail("must not reach the package"))
    with pytest.raises(kaggle_api.KaggleError, match="no Kaggle credentials found: put kaggle.json"):
        kaggle_api.submit("toy", tmp_path / "s.csv", "m")


def test_package_exit_becomes_our_error(monkeypatch, token):
    def exits():
        raise SystemExit(1)

    monkeypatch.setattr(kaggle_api, "_make_client", exits)
    with pytest.raises(kaggle_api.KaggleError, match="rejected the credentials in KAGGLE_API_TOKEN"):
        kaggle_api.client()


def test_submit_success_returns_the_ref(monkeypatch, token, tmp_path):
    fake = _use(monkeypatch, FakeKaggle225())
    assert kaggle_api.submit("landmark-retrieval-2019", tmp_path / "s.csv.gz", "run x") == 4242
    assert fake.calls == [("submit", "landmark-retrieval-2019")]


def test_an_error_response_on_submit_is_a_failure(monkeypatch, token, tmp_path):
    _use(monkeypatch, FakeKaggle225(submit_fails=True))
    with pytest.raises(kaggle_api.KaggleError, match="Could not submit to competition"):
        kaggle_api.submit("landmark-retrieval-2019", tmp_path / "s.csv", "m")
    with pytest.raises(kaggle_api.KaggleError, match="notebook version failed"):
        kaggle_api.submit_kernel("landmark-retrieval-2021", "me/nb", 3, "m")


def test_raised_errors_are_redacted(monkeypatch, token):
    class Raises(FakeKaggle225):
        def competition_submit(self, **kwargs):
            raise RuntimeError("401 for token s3cr3t-token")

    _use(monkeypatch, Raises())
    with pytest.raises(kaggle_api.KaggleError) as info:
        kaggle_api.submit("c", "f.csv", "m")
    assert "s3cr3t-token" not in str(info.value) and "***" in str(info.value)


def _kernel_folders(root, user="me", train=False):
    names = ["wheels", "model"] + (["train-features"] if train else [])
    refs = []
    for name in names:
        (root / name / "sub").mkdir(parents=True)
        ref = f"{user}/landmark-retrieval-2021-remap-{name}"
        (root / name / "dataset-metadata.json").write_text(json.dumps({"id": ref, "title": name}))
        refs.append(ref)
    (root / "kernel").mkdir()
    (root / "kernel" / "kernel-metadata.json").write_text(
        json.dumps({"id": f"{user}/landmark-retrieval-2021-remap", "dataset_sources": refs}))
    return refs


def test_push_creates_new_datasets_waits_for_them_then_pushes_the_kernel(monkeypatch, token, tmp_path):
    refs = _kernel_folders(tmp_path)
    fake = _use(monkeypatch, FakeKaggle225())
    sleeps = []
    pushed = kaggle_api.push(tmp_path, wait_s=3600, sleep=sleeps.append)
    assert [c for c in fake.calls if c[0] == "create"] == [("create", ref, "zip") for ref in sorted(refs)]
    assert fake.kernel_pushes == [{"ref": "me/landmark-retrieval-2021-remap", "sources_ready": True}]
    assert len(sleeps) == 2 and pushed[-1] == "me/landmark-retrieval-2021-remap version 1"


def test_push_versions_a_slug_in_use(monkeypatch, token, tmp_path):
    refs = _kernel_folders(tmp_path)
    fake = _use(monkeypatch, FakeKaggle225(existing=refs, pending_polls=0))
    kaggle_api.push(tmp_path, sleep=lambda s: None)
    assert not [c for c in fake.calls if c[0] == "create"]
    assert fake.datasets[refs[1]]["versions"] == 2 and fake.kernel_pushes[0]["sources_ready"]


def test_slug_in_use_answer_is_an_error_not_a_success(monkeypatch, token, tmp_path):
    """What `datasets create || datasets version` missed: the error object of a create on an existing slug."""
    _kernel_folders(tmp_path)
    fake = FakeKaggle225()
    fake.dataset_status = lambda dataset, format=None: (_ for _ in ()).throw(_http_error(404))  # a stale answer
    fake.datasets["me/landmark-retrieval-2021-remap-wheels"] = {"polls": 0, "versions": 1}
    _use(monkeypatch, fake)
    with pytest.raises(kaggle_api.KaggleError, match="already in use"):
        kaggle_api.push(tmp_path, sleep=lambda s: None)
    assert fake.kernel_pushes == []


def test_push_gives_up_when_datasets_stay_pending(monkeypatch, token, tmp_path):
    _kernel_folders(tmp_path)
    fake = _use(monkeypatch, FakeKaggle225(pending_polls=10**6))
    ticks = iter(range(0, 10**6, 100))
    monkeypatch.setattr(kaggle_api.time, "monotonic", lambda: float(next(ticks)))
    with pytest.raises(kaggle_api.KaggleError, match="not ready after 300s"):
        kaggle_api.push(tmp_path, wait_s=300, sleep=lambda s: None)
    assert fake.kernel_pushes == []


def test_cli_push_and_submit_are_one_line_each(monkeypatch, token, tmp_path, capsys):
    _kernel_folders(tmp_path)
    _use(monkeypatch, FakeKaggle225(pending_polls=0))
    assert main(["kaggle", "push", "--dir", str(tmp_path)]) == 0
    assert "version 1" in capsys.readouterr().out
    _use(monkeypatch, FakeKaggle225(submit_fails=True))
    assert main(["kaggle", "submit", "--kernel", "me/nb", "--version", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "s3cr3t" not in err[0]
    assert main(["kaggle", "submit", "--kernel", "me/nb"]) == 2
    assert "--version N" in capsys.readouterr().err


def test_competition_download_unzips_once(tmp_path, monkeypatch, token):
    fake = _use(monkeypatch, FakeKaggle225())
    fake.files = {"train.csv": b"id,landmark_id\n", "test/0/1/2/0123456789abcdef.jpg": b"j",
                  "sample_submission.csv": b"id,images\n"}
    kaggle_api.download_competition("c", tmp_path)
    assert (tmp_path / "test/0/1/2/0123456789abcdef.jpg").read_bytes() == b"j"
    assert not list(tmp_path.glob("*.zip"))
    kaggle_api.download_competition("c", tmp_path)  # second run: nothing fetched again
    assert fake.calls.count(("all", "c")) == 1


def test_a_zipped_single_file_is_unzipped_to_the_path_returned(tmp_path, monkeypatch, token):
    fake = _use(monkeypatch, FakeKaggle225(large={"train.csv"}))
    fake.files = {"train.csv": b"id,landmark_id\n1,2\n", "small.csv": b"x\n"}
    written = kaggle_api.download_competition("c", tmp_path, ["train.csv", "small.csv"])
    assert written == [tmp_path / "train.csv", tmp_path / "small.csv"]
    assert all(p.is_file() for p in written) and (tmp_path / "train.csv").read_bytes().endswith(b"1,2\n")
    assert not list(tmp_path.glob("*.zip"))


def test_unzip_refuses_escaping_members(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../evil.txt", b"x")
    with pytest.raises(kaggle_api.KaggleError, match="would leave"):
        kaggle_api.safe_unzip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(("kind", "hint"), [("dataset", "is ready"), ("competition", "accept the competition's rules")])
def test_a_push_that_drops_sources_fails_in_one_line(monkeypatch, token, tmp_path, capsys, kind, hint):
    _kernel_folders(tmp_path)
    dropped = "me/landmark-retrieval-2021-remap-wheels" if kind == "dataset" else "landmark-retrieval-2021"
    _use(monkeypatch, FakeKaggle225(pending_polls=0, invalid_sources={kind: [dropped]}))
    assert main(["kaggle", "push", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and dropped in err[0] and hint in err[0]


@pytest.mark.parametrize("status", ["failed", "deleted"])
def test_a_failed_or_deleted_dataset_stops_the_wait_at_once(monkeypatch, token, tmp_path, status):
    _kernel_folders(tmp_path)
    fake = _use(monkeypatch, FakeKaggle225(pending_polls=0, final_status=status))
    sleeps = []
    with pytest.raises(kaggle_api.KaggleError, match=f"is {status} on Kaggle"):
        kaggle_api.push(tmp_path, wait_s=1800, sleep=sleeps.append)
    assert sleeps == [] and fake.kernel_pushes == []


def test_a_csv_upload_to_a_code_competition_is_refused_before_any_work(monkeypatch, token, capsys):
    fake = _use(monkeypatch, FakeKaggle225())
    assert main(["submit", "--config", "kernel-2021", "--kaggle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "code competition" in err[0] and "make submit-kaggle" in err[0]
    assert fake.calls == []
