"""``make kernel``: the folders to push for an offline Kaggle GPU kernel.

    <out>/wheels/           this project's wheel and every runtime dependency Kaggle's image lacks (faiss, GPU
                            and CPU builds, with their own dependencies), for Kaggle's Python and platform;
                            never torch. ``remap-wheels.json`` lists what it holds.
    <out>/model/            the checkpoint (it rebuilds its own network) and ``remap-model.json``
    <out>/train-features/   optional: train descriptors (float16), ids and landmark ids for label re-ranking
    <out>/kernel/           kernel-metadata.json (internet off, GPU on, sources filled in) and entry.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .entry import MODEL_MARKER, TRAIN_MARKER, WHEELS_MANIFEST, last_line

REPO = Path(__file__).resolve().parents[2]
# Kaggle's GPU image (checked November 2026): CPython 3.11 on x86-64 Linux, glibc 2.35. It has torch,
# torchvision, timm, albumentations, numpy, pandas, scikit-learn, scipy, PyYAML, Pillow, tqdm, joblib and
# matplotlib; it has no faiss.
KAGGLE_PYTHON = "3.11"
KAGGLE_PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"]
# faiss-gpu-cu12 wheels are built for compute capability 7.0-8.9 (T4, V100, A100, L4), not the P100 (6.0).
FAISS = {"gpu": {"requirement": "faiss-gpu-cu12", "prefix": "faiss_gpu_cu12-", "compute_capability": [7.0, 8.9]},
         "cpu": {"requirement": "faiss-cpu", "prefix": "faiss_cpu-"}}
NEVER_SHIP = ("torch-", "torchvision-", "torchaudio-")  # Kaggle's own CUDA build must be kept


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(folder: Path, requirement: str, python_version: str, platforms: list[str]) -> list[str]:
    """``requirement`` and its dependencies as binary wheels for the target interpreter; the new file names."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary", ":all:", "--implementation", "cp", "--python-version", python_version,
                   "-d", tmp, requirement]
        for platform in platforms:
            command += ["--platform", platform]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"pip could not download {requirement} for Python {python_version} on "
                               f"{platforms[0]}: {last_line(result.stderr)}")
        names = []
        for wheel in sorted(Path(tmp).iterdir()):
            if not (folder / wheel.name).exists():
                shutil.move(str(wheel), folder / wheel.name)
            names.append(wheel.name)
        return names


def build_wheels(folder: Path, python_version: str = KAGGLE_PYTHON, platforms: list[str] | None = None,
                 faiss: tuple[str, ...] = ("gpu", "cpu"), download: bool = True) -> dict:
    """The wheels dataset and its manifest. ``download=False`` ships this project alone (the kernel then stops
    at once, saying faiss is missing)."""
    platforms = platforms or KAGGLE_PLATFORMS
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--disable-pip-version-check", "-w", str(folder), str(REPO)], check=True)
    package = next(p.name for p in folder.glob("remap_landmarks-*.whl"))
    manifest: dict = {"package": package, "python": python_version, "platforms": platforms, "faiss": {}}
    for variant in faiss if download else ():
        spec = FAISS[variant]
        names = download_wheels(folder, spec["requirement"], python_version, platforms)
        wheel = next(n for n in names if n.startswith(spec["prefix"]))
        manifest["faiss"][variant] = {k: v for k, v in {**spec, "wheel": wheel}.items() if k != "prefix"}
    shipped = sorted(p.name for p in folder.glob("*.whl"))
    if any(name.startswith(NEVER_SHIP) for name in shipped):
        raise RuntimeError("a torch wheel ended up in the wheels dataset; Kaggle's own torch must be kept")
    manifest["files"] = shipped
    _write_json(folder / WHEELS_MANIFEST, manifest)
    return manifest


def write_train_features(folder: Path, descriptors: np.ndarray, ids: list[str], labels: np.ndarray, tta: str,
                         checkpoint_sha: str) -> None:
    """Train descriptors for the kernel's label re-ranking: float16 rows, their ids and landmark ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train_descriptors.npy", descriptors.astype(np.float16)),
                        ("train_labels.npy", np.asarray(labels, np.int64))):
        with atomic_path(folder / name) as tmp, tmp.open("wb") as handle:
            np.save(handle, array)
    (folder / "train_ids.txt").write_text("\n".join(ids) + "\n")
    _write_json(folder / TRAIN_MARKER, {"descriptors": "train_descriptors.npy", "labels": "train_labels.npy",
                                        "ids": "train_ids.txt", "count": len(ids), "dim": int(descriptors.shape[1]),
                                        "tta": tta, "checkpoint_sha256": checkpoint_sha})


def _pack_ensemble(model: Path, ensemble: dict, first: Path) -> dict:
    """Copy the members' checkpoints (the first is ``checkpoint.pt`` already) and the whitening into
    ``model``; the marker's description of them."""
    (model / "members").mkdir()
    listed = []
    for i, member in enumerate(ensemble["members"]):
        source = Path(member["checkpoint"])
        name = "checkpoint.pt" if source.resolve() == Path(first).resolve() else f"members/{i:02d}-{member['run']}.pt"
        if name != "checkpoint.pt":
            shutil.copy2(source, model / name)
        listed.append({"run": member["run"], "weight": float(member["weight"]), "checkpoint": name,
                       "sha256": sha256(model / name)})
    shutil.copy2(ensemble["whitening"], model / "whitening.npz")
    return {"members": listed, "whitening": "whitening.npz"}


def build(out: str | Path, slug: str, checkpoint: str | Path, user: str, download_deps: bool = True,
          python_version: str = KAGGLE_PYTHON, platforms: list[str] | None = None,
          faiss: tuple[str, ...] = ("gpu", "cpu"), train_features: dict | None = None,
          infer_cfg: dict | None = None, ensemble: dict | None = None) -> dict[str, Path]:
    """Write the folders; ``train_features`` = {descriptors, ids, labels, tta} adds the third dataset;
    ``infer_cfg`` (the command's ``infer`` settings) replaces the checkpoint's own in the kernel.
    ``ensemble`` = {members: [{run, weight, checkpoint}], whitening: path}: the model dataset carries every
    member's checkpoint (``checkpoint`` is the first's) and the ensemble's saved whitening."""
    out = Path(out)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train first or pass CHECKPOINT=...")
    names = ["wheels", "model", "kernel"] + (["train-features"] if train_features is not None else [])
    folders = {name: out / name for name in names}
    for folder in folders.values():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    build_wheels(folders["wheels"], python_version, platforms, faiss, download_deps)
    checkpoint_sha = sha256(checkpoint)
    ids = {name: f"{user}/{slug}-remap-{name}" for name in folders if name != "kernel"}
    for name, ref in ids.items():
        _write_json(folders[name] / "dataset-metadata.json",
                    {"title": f"{slug} REMAP {name}", "id": ref, "licenses": [{"name": "apache-2.0"}]})
    shutil.copy2(checkpoint, folders["model"] / "checkpoint.pt")
    marker = {"checkpoint_sha256": checkpoint_sha, "competition": slug}
    if infer_cfg is not None:
        marker["infer"] = infer_cfg
    if ensemble is not None:
        marker["ensemble"] = _pack_ensemble(folders["model"], ensemble, checkpoint)
    _write_json(folders["model"] / MODEL_MARKER, marker)
    if train_features is not None:
        write_train_features(folders["train-features"], train_features["descriptors"], train_features["ids"],
                             train_features["labels"], train_features["tta"], checkpoint_sha)
    shutil.copy2(Path(__file__).with_name("entry.py"), folders["kernel"] / "entry.py")
    _write_json(folders["kernel"] / "kernel-metadata.json", {
        "id": f"{user}/{slug}-remap", "title": f"{slug} REMAP", "code_file": "entry.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_internet": False,
        "dataset_sources": list(ids.values()), "competition_sources": [slug], "kernel_sources": [],
        "model_sources": [],
    })
    return folders
