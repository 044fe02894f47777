"""The wheels dataset installs on every Python Kaggle's GPU image has run or may run next (3.11, 3.12, 3.13):
each interpreter that pyenv holds here resolves the shipped faiss GPU wheel, faiss CPU wheel and this project's
wheel from the dataset alone, offline. Building it downloads the real wheels (about 560 MB, the CUDA libraries
shared by all three Pythons) from the package index: marked ``network``, and run by ``make test``."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from solution.kernel.build import KAGGLE_PYTHONS, build_project_wheel, build_wheels
from solution.kernel.contract import WHEELS_MANIFEST, faiss_wheel, tag_of_version

pytestmark = pytest.mark.network


def pyenv_python(version: str) -> Path | None:
    """pyenv's CPython ``version`` (3.12 -> ~/.pyenv/versions/3.12.x/bin/python3.12), or None."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(root.glob(f"{version}.*/bin/python{version}"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheels")
    manifest = build_wheels(folder, KAGGLE_PYTHONS)
    return folder, manifest


def test_the_manifest_lists_each_faiss_wheel_by_python_tag(wheels):
    folder, manifest = wheels
    assert json.loads((folder / WHEELS_MANIFEST).read_text()) == manifest
    for version in KAGGLE_PYTHONS:
        tag = tag_of_version(version)
        assert f"-{tag}-" in faiss_wheel(manifest, "gpu", tag)  # the GPU wheel is built per Python
        assert faiss_wheel(manifest, "cpu", tag).startswith("faiss_cpu-")  # abi3: one wheel serves them all
    assert len([n for n in manifest["files"] if n.startswith("nvidia_cublas")]) == 1  # CUDA libraries shared
    assert manifest["faiss"]["gpu"]["archs"] == ["7.0", "8.0"]


@pytest.mark.parametrize("version", KAGGLE_PYTHONS)
def test_each_python_resolves_every_shipped_wheel_offline(wheels, version):
    python = pyenv_python(version)
    if python is None:
        pytest.skip(f"pyenv holds no CPython {version} on this machine")
    folder, manifest = wheels
    tag = tag_of_version(version)
    for wheel in (faiss_wheel(manifest, "gpu", tag), faiss_wheel(manifest, "cpu", tag), manifest["package"]):
        result = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed",
                                 "--no-index", "--disable-pip-version-check", "--find-links", str(folder),
                                 str(folder / wheel)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{version} {wheel}: {result.stderr[-2000:]}"
        assert "Would install" in result.stdout


def test_the_project_wheel_builds_on_a_base_python_without_wheel(tmp_path):
    """pyenv's 3.11 has setuptools 65 and no ``wheel``: `pip wheel --no-build-isolation` failed there with
    "invalid command 'bdist_wheel'"; the isolated build from pyproject.toml's [build-system] does not."""
    python = pyenv_python("3.11")
    if python is None:
        pytest.skip("pyenv holds no CPython 3.11 on this machine")
    name = build_project_wheel(tmp_path, str(python))
    assert name.startswith("remap_landmarks-") and (tmp_path / name).is_file()
