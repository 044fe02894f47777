"""The kernel's entry script: discovery under Kaggle's old and new mounts, faiss choice and fallback."""

import json

import pytest

from solution.gpu_archs import faiss_gpu_serves, torch_serves
from solution.kernel import discovery, entry
from solution.kernel.contract import MANIFEST_SCHEMA, KernelError, python_tag


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
    assert discovery.find_competition(tmp_path) == comp
    assert discovery.find_wheels(tmp_path) == wheels
    assert discovery.find_models(tmp_path) == [model]
    assert discovery.find_train_features(tmp_path) is None


def test_discovery_never_enters_image_trees(tmp_path, monkeypatch):
    comp, _, _ = _mount(tmp_path, "new")
    entered = []
    real = type(tmp_path).iterdir

    def spy(self):
        entered.append(self)
        return real(self)

    monkeypatch.setattr(type(tmp_path), "iterdir", spy)
    discovery.find_models(tmp_path)
    assert not any(comp in p.parents or p == comp for p in entered)


def test_a_missing_dataset_is_one_line_listing_what_was_found(tmp_path):
    _competition(tmp_path / "competitions" / "landmark-retrieval-2021")
    with pytest.raises(KernelError) as info:
        discovery.find_models(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "model dataset" in message and "make kernel" in message
    assert "competitions/landmark-retrieval-2021" in message


def test_markers_deeper_than_the_bound_are_not_found(tmp_path):
    _dataset(tmp_path / "a" / "b" / "c" / "d" / "e", entry.WHEELS_MANIFEST)
    with pytest.raises(KernelError, match="within 4 levels"):
        discovery.find_wheels(tmp_path)


TAG = python_tag()
MANIFEST = {"schema": MANIFEST_SCHEMA, "package": "remap.whl", "files": ["remap.whl", "gpu.whl", "cpu.whl"],
            "faiss": {"gpu": {"requirement": "faiss-gpu-cu12", "archs": ["7.0", "8.0"], "wheels": {TAG: "gpu.whl"}},
                      "cpu": {"requirement": "faiss-cpu", "wheels": {TAG: "cpu.whl"}}}}


@pytest.mark.parametrize(("capabilities", "order"), [
    ([7.5, 7.5], ["gpu", "cpu"]),  # two T4s
    ([8.0], ["gpu", "cpu"]),  # A100
    ([8.9], ["gpu", "cpu"]),  # L4: sm_80 code runs on 8.x
    ([6.0], ["cpu"]),  # P100
    ([9.0], ["cpu"]),  # H100/H200: no sm_90 code and no PTX in the wheel
    ([12.0], ["cpu"]),  # RTX Pro (Blackwell)
    ([7.5, 9.0], ["cpu"]),  # one GPU it cannot serve is enough
    ([], ["cpu"]),
])
def test_gpu_faiss_only_for_gpus_its_wheel_has_code_for(capabilities, order):
    assert entry.choose_faiss(MANIFEST, capabilities, TAG) == order


def test_faiss_for_another_python_is_never_chosen():
    assert entry.choose_faiss(MANIFEST, [7.5], "cp399") == []
    assert entry.choose_faiss({**MANIFEST, "faiss": {"cpu": MANIFEST["faiss"]["cpu"]}}, [7.5], TAG) == ["cpu"]


def test_an_exact_index_gets_cpu_faiss_even_on_gpus_it_serves():
    """Exact search never calls faiss on the GPU: its GPU build would only bring its CUDA libraries (issue 28)."""
    assert entry.choose_faiss(MANIFEST, [7.5, 7.5], TAG, gpu_index=False) == ["cpu"]
    assert entry.choose_faiss(MANIFEST, [7.5, 7.5], TAG, gpu_index=True) == ["gpu", "cpu"]


def test_the_index_type_comes_from_the_model_marker(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / entry.MODEL_MARKER).write_text(json.dumps({"infer": {"index": {"type": "ivfpq"}}}))
    assert entry.index_type([model]) == "ivfpq"
    (model / entry.MODEL_MARKER).write_text(json.dumps({"infer": {"index": {"dtype": "float16"}}}))
    assert entry.index_type([model]) == "flat"
    (model / entry.MODEL_MARKER).write_text("{not json")
    with pytest.raises(KernelError, match="cannot be read as JSON.*make kernel") as info:
        entry.index_type([model])
    assert "\n" not in str(info.value)


def test_torch_is_imported_before_faiss(tmp_path, monkeypatch):
    wheels = _wheels(tmp_path, MANIFEST)
    imported = []
    monkeypatch.setattr(entry, "pip_install", lambda folder, *args: None)
    monkeypatch.setattr(entry.importlib, "import_module", imported.append)
    assert entry.install(wheels, capabilities=[7.5], gpu_index=False) == "cpu"
    assert imported.index("torch") < imported.index("solution.kernel.run") < imported.index("faiss")


def test_faiss_gpu_serves_follows_cuda_binary_compatibility():
    assert [faiss_gpu_serves(c) for c in (6.0, 6.1, 7.0, 7.5, 8.0, 8.6, 8.9, 9.0, 10.0, 12.0)] == \
        [False, False, True, True, True, True, True, False, False, False]


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
    old = _wheels(tmp_path / "c", {k: v for k, v in MANIFEST.items() if k != "schema"})
    with pytest.raises(KernelError, match="older `make kernel`"):
        entry.check_manifest(old)
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


def test_a_dataset_without_faiss_for_this_python_stops_before_any_gpu_work(tmp_path, monkeypatch):
    """Kaggle's image moved from 3.11 to 3.12 once: a dataset built for another Python is one line naming both."""
    other = {**MANIFEST, "faiss": {v: {**spec, "wheels": {"cp39": "x.whl"}} for v, spec in MANIFEST["faiss"].items()}}
    wheels = _wheels(tmp_path, {**other, "files": ["remap.whl", "x.whl"]})
    monkeypatch.setattr(entry, "pip_install", lambda *a: pytest.fail("nothing may be installed"))
    monkeypatch.setattr(entry, "gpu_capabilities", lambda: pytest.fail("no GPU work before the check"))
    with pytest.raises(KernelError) as info:
        entry.install(wheels, capabilities=None)
    message = str(info.value)
    version = f"{TAG[2]}.{TAG[3:]}"
    assert f"runs Python {version} ({TAG})" in message
    assert "\n" not in message and "holds faiss for cp39;" in message and "KAGGLE_PYTHONS" in message


def test_the_shipped_entry_script_is_one_file_that_runs_without_this_package(tmp_path):
    """`make kernel` inlines gpu_archs.py, contract.py and discovery.py: the script runs in a bare interpreter,
    with nothing importable."""
    import subprocess
    import sys

    from solution.kernel.build import standalone_entry

    script = tmp_path / "entry.py"
    script.write_text(standalone_entry())
    text = script.read_text()
    assert "from .contract" not in text and "from ..gpu_archs" not in text and "from .discovery" not in text
    assert "class KernelError" in text and "def faiss_gpu_serves" in text and "def find_models" in text
    (tmp_path / "input").mkdir()
    result = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, capture_output=True, text=True,
                            env={"KAGGLE_INPUT_ROOT": str(tmp_path / "input"),
                                 "KAGGLE_WORKING_DIR": str(tmp_path / "working")}, check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "no wheels dataset" in errors[0]
    assert "Traceback" not in result.stderr


def test_the_kernel_modules_import_without_a_circle():
    """contract imports nothing of the package, discovery only contract; build, entry and run import what they
    share from them (the whole package's contract: tests/test_layers.py)."""
    import ast
    from pathlib import Path

    import solution.kernel as package

    folder = Path(package.__file__).parent

    def imports(name):
        tree = ast.parse((folder / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}

    assert not {m for m in imports("contract")}
    assert "entry" not in imports("build") and "run" not in imports("build")
    assert "build" not in imports("run") and imports("entry") == {"contract", "discovery"}
    assert imports("discovery") == {"contract"} and "entry" not in imports("run")


@pytest.mark.parametrize(("capability", "archs", "serves"), [
    ((7, 5), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], True),  # T4
    ((8, 9), ["sm_80", "sm_86"], True),  # L4 on sm_86 code: same major, lower minor
    ((12, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], False),  # Blackwell, no PTX
    ((12, 0), ["sm_80", "sm_90", "compute_90"], True),  # PTX of an older architecture is compiled by the driver
    ((6, 0), ["sm_70", "sm_75", "compute_70"], False),  # P100 on a build that dropped it: PTX is newer
    ((9, 0), ["sm_86"], False),
])
def test_torch_serves_a_card_by_its_arch_list(capability, archs, serves):
    assert torch_serves(capability, archs) is serves


def test_a_card_the_installed_torch_lacks_stops_before_any_work(monkeypatch):
    import torch

    from solution.kernel import run

    class Props:
        name, major, minor, total_memory = "NVIDIA RTX PRO 6000 Blackwell", 12, 0, 96 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_70", "sm_75", "sm_80", "sm_90"])
    with pytest.raises(KernelError) as info:
        run.check_cards()
    message = str(info.value)
    assert "RTX PRO 6000" in message and "12.0" in message and "sm_70 sm_75 sm_80 sm_90" in message
    assert "MACHINE_SHAPE" in message and "\n" not in message
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_90", "sm_120"])
    assert run.check_cards() == ["cuda:0 NVIDIA RTX PRO 6000 Blackwell (96.0 GiB, sm_120)"]


def test_a_retired_or_empty_machine_shape_is_refused():
    from solution.config import ConfigError
    from solution.kernel.build import check_machine_shape

    check_machine_shape("NvidiaTeslaT4")
    with pytest.raises(ConfigError, match="retired.*MACHINE_SHAPE=NvidiaTeslaT4"):
        check_machine_shape("NvidiaTeslaP100")
    with pytest.raises(ConfigError, match="empty"):
        check_machine_shape(" ")
