"""The kernel's entry script: discovery under Kaggle's old and new mounts, faiss choice and fallback."""

import json

import pytest

from solution.kernel import entry
from solution.kernel.entry import KernelError


def _competition(folder):
    for split in ("test", "index", "train"):
        (folder / split / "0" / "1" / "2").mkdir(parents=True)
    (folder / "sample_submission.csv").write_text("id,images\n")


def _dataset(folder, marker, extra=()):
    folder.mkdir(parents=True)
    (folder / marker).write_text("{}")
    for name in extra:
        (folder / name).write_bytes(b"x")


def _mount(root, layout):
    """The three inputs as Kaggle mounts them: ``old`` /kaggle/input/<slug>, ``new`` competitions/ and datasets/."""
    if layout == "old":
        comp, wheels, model = root / "landmark-retrieval-2021", root / "x-wheels", root / "x-model"
    else:
        comp = root / "competitions" / "landmark-retrieval-2021"
        wheels, model = root / "datasets" / "someone" / "x-wheels", root / "datasets" / "someone" / "x-model"
    _competition(comp)
    _dataset(wheels, entry.WHEELS_MANIFEST)
    _dataset(model / "inner", entry.MODEL_MARKER, ["checkpoint.pt"])  # a dataset zipped with a top folder
    return comp, wheels, model / "inner"


@pytest.mark.parametrize("layout", ["old", "new"])
def test_discovery_finds_everything_in_both_layouts(tmp_path, layout):
    comp, wheels, model = _mount(tmp_path, layout)
    assert entry.find_competition(tmp_path) == comp
    assert entry.find_wheels(tmp_path) == wheels
    assert entry.find_models(tmp_path) == [model]
    assert entry.find_train_features(tmp_path) is None


def test_discovery_never_enters_image_trees(tmp_path, monkeypatch):
    comp, _, _ = _mount(tmp_path, "new")
    entered = []
    real = type(tmp_path).iterdir

    def spy(self):
        entered.append(self)
        return real(self)

    monkeypatch.setattr(type(tmp_path), "iterdir", spy)
    entry.find_models(tmp_path)
    assert not any(comp in p.parents or p == comp for p in entered)


def test_a_missing_dataset_is_one_line_listing_what_was_found(tmp_path):
    _competition(tmp_path / "competitions" / "landmark-retrieval-2021")
    with pytest.raises(KernelError) as info:
        entry.find_models(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "model dataset" in message and "make kernel" in message
    assert "competitions/landmark-retrieval-2021" in message


def test_markers_deeper_than_the_bound_are_not_found(tmp_path):
    _dataset(tmp_path / "a" / "b" / "c" / "d" / "e", entry.WHEELS_MANIFEST)
    with pytest.raises(KernelError, match="within 4 levels"):
        entry.find_wheels(tmp_path)


MANIFEST = {"package": "remap.whl", "files": ["remap.whl", "gpu.whl", "cpu.whl"],
            "faiss": {"gpu": {"requirement": "faiss-gpu-cu12", "wheel": "gpu.whl", "compute_capability": [7.0, 8.9]},
                      "cpu": {"requirement": "faiss-cpu", "wheel": "cpu.whl"}}}


def test_gpu_faiss_only_for_gpus_its_wheel_serves(caplog):
    assert entry.choose_faiss(MANIFEST, [7.5, 7.5]) == ["gpu", "cpu"]  # two T4s
    assert entry.choose_faiss(MANIFEST, [6.0]) == ["cpu"]  # P100
    assert "6.0" in caplog.text
    assert entry.choose_faiss(MANIFEST, []) == ["cpu"]
    assert entry.choose_faiss({"faiss": {"cpu": MANIFEST["faiss"]["cpu"]}}, [7.5]) == ["cpu"]


def _wheels(tmp_path, manifest):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / entry.WHEELS_MANIFEST).write_text(json.dumps(manifest))
    for name in manifest["files"]:
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_manifest_without_faiss_or_with_missing_wheels_is_refused(tmp_path):
    wheels = _wheels(tmp_path / "a", {**MANIFEST, "faiss": {}, "files": ["remap.whl"]})
    with pytest.raises(KernelError, match="holds no faiss wheel"):
        entry.check_manifest(wheels)
    wheels = _wheels(tmp_path / "b", MANIFEST)
    (wheels / "cpu.whl").unlink()
    with pytest.raises(KernelError, match="lacks cpu.whl"):
        entry.check_manifest(wheels)


def test_gpu_faiss_that_cannot_use_the_gpu_falls_back_to_cpu(tmp_path, monkeypatch):
    wheels = _wheels(tmp_path, MANIFEST)
    installed, commands = [], []
    monkeypatch.setattr(entry, "pip_install", lambda folder, *args: installed.append(args[-1].rsplit("/", 1)[-1]))
    monkeypatch.setattr(entry, "faiss_serves_gpu", lambda: False)
    monkeypatch.setattr(entry.subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    monkeypatch.setattr(entry.importlib, "import_module", lambda name: None)
    assert entry.install(wheels, capabilities=[7.5]) == "cpu"
    assert installed == ["remap.whl", "gpu.whl", "cpu.whl"]
    assert any("uninstall" in c and "faiss-gpu-cu12" in c for c in commands)

    installed.clear()
    monkeypatch.setattr(entry, "faiss_serves_gpu", lambda: True)
    assert entry.install(wheels, capabilities=[7.5]) == "gpu" and installed == ["remap.whl", "gpu.whl"]


def test_a_faiss_that_does_not_import_is_one_line(tmp_path, monkeypatch):
    wheels = _wheels(tmp_path, MANIFEST)
    monkeypatch.setattr(entry, "pip_install", lambda folder, *args: None)

    def no_faiss(name):
        if name == "faiss":
            raise ImportError("libcublas.so.12: cannot open shared object file")

    monkeypatch.setattr(entry.importlib, "import_module", no_faiss)
    with pytest.raises(KernelError, match="faiss does not import .* libcublas"):
        entry.install(wheels, capabilities=[])
