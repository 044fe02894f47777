"""``make kernel``: the folders to push for an offline Kaggle GPU kernel.

    <out>/wheels/           this project's wheel and every runtime dependency Kaggle's image lacks (faiss, GPU
                            and CPU builds, with their own dependencies), for Kaggle's Python and platform;
                            never torch. ``remap-wheels.json`` lists what it holds.
    <out>/model/            the checkpoint (it rebuilds its own network) and ``remap-model.json``
    <out>/train-features/   optional: train descriptors (float16), ids and landmark ids for label re-ranking
    <out>/kernel/           kernel-metadata.json (internet off, GPU on, sources filled in) and entry.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, staged_folder
from ..config import ConfigError
from ..gpu_archs import FAISS_GPU_ARCHS
from .contract import (
    DEFAULT_MACHINE_SHAPE,
    MANIFEST_SCHEMA,
    MODEL_MARKER,
    RETIRED_MACHINE_SHAPES,
    TRAIN_MARKER,
    WHEELS_MANIFEST,
    KernelError,
    last_line,
    sha256,
    tag_of_version,
)

REPO = Path(__file__).resolve().parents[2]
# Kaggle's GPU image (Kaggle/docker-python, "Upgrade to Python 3.12", December 2025): CPython 3.12 on x86-64
# Linux, glibc 2.35, with torch, torchvision, timm, albumentations, numpy, pandas, scikit-learn, scipy, PyYAML,
# Pillow, tqdm, joblib and matplotlib, and no faiss. faiss's GPU wheel is built per Python, so the dataset
# carries it for the image's Python and its neighbours: the next image upgrade finds its wheel already there
# (the CUDA library wheels are shared, so each extra Python adds one 48 MB wheel).
KAGGLE_PYTHON = "3.12"
KAGGLE_PYTHONS = ("3.11", "3.12", "3.13")
KAGGLE_PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"]
FAISS = {"gpu": {"requirement": "faiss-gpu-cu12", "prefix": "faiss_gpu_cu12-", "archs": list(FAISS_GPU_ARCHS)},
         "cpu": {"requirement": "faiss-cpu", "prefix": "faiss_cpu-"}}
NEVER_SHIP = ("torch-", "torchvision-", "torchaudio-")  # Kaggle's own CUDA build must be kept
CONTRACT_START, CONTRACT_END = "# <contract>", "# </contract>"


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# The leaves inlined into the shipped entry.py, in order: standard library only, importing nothing of this
# package but an earlier leaf (those single-line imports are dropped: the names are already defined above).
INLINED = (Path(__file__).parent.parent / "gpu_archs.py", Path(__file__).with_name("contract.py"),
           Path(__file__).with_name("discovery.py"))
LEAF_IMPORT = re.compile(r"^from \.+[\w.]* import [^(]+$")


def standalone_entry() -> str:
    """entry.py as the kernel runs it: one file, with the leaves' text in place of their imports (a Kaggle
    script kernel is a single file, and nothing of this package is installed when it starts)."""
    entry = Path(__file__).with_name("entry.py").read_text()
    head, rest = entry.split(CONTRACT_START, 1)
    tail = rest.split(CONTRACT_END, 1)[1]
    parts = []
    for leaf in INLINED:
        body = leaf.read_text().split('"""', 2)[2].lstrip("\n")  # without its module docstring
        body = "\n".join(line for line in body.split("\n") if not LEAF_IMPORT.match(line))
        name = leaf.relative_to(Path(__file__).parent.parent.parent)
        parts.append(f"# --- {name}, inlined by `make kernel` ---\n{body}# --- end of {leaf.name} ---\n")
    return head + "\n".join(parts) + tail


def download_wheels(folder: Path, requirement: str, python_version: str, platforms: list[str]) -> list[str]:
    """``requirement`` and its dependencies as binary wheels for the target interpreter; the file names.
    Wheels already in ``folder`` (another Python's shared CUDA libraries) are reused, not downloaded again."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary", ":all:", "--implementation", "cp", "--python-version", python_version,
                   "--find-links", str(folder), "-d", tmp, requirement]
        for platform in platforms:
            command += ["--platform", platform]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise KernelError(f"pip could not download {requirement} for Python {python_version} on "
                              f"{platforms[0]}: {last_line(result.stderr)}; check --python-version and the network "
                              "(--no-download ships this project alone)")
        names = []
        for wheel in sorted(Path(tmp).iterdir()):
            if not (folder / wheel.name).exists():
                shutil.move(str(wheel), folder / wheel.name)
            names.append(wheel.name)
        return names


def build_project_wheel(folder: Path, python: str = sys.executable) -> str:
    """This project's wheel, built by ``python``'s pip in an isolated build environment from pyproject.toml's
    ``[build-system]`` (so the base Python's own setuptools, or a missing ``wheel``, cannot break it)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "--quiet",
                                 "--disable-pip-version-check", "-w", tmp, str(REPO)],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise KernelError(f"pip could not build this project's wheel: {last_line(result.stderr)}")
        wheel = next(Path(tmp).glob("remap_landmarks-*.whl"))
        shutil.move(str(wheel), folder / wheel.name)
        return wheel.name


def build_wheels(folder: Path, python_versions: tuple[str, ...] | list[str] = KAGGLE_PYTHONS,
                 platforms: list[str] | None = None, faiss: tuple[str, ...] = ("gpu", "cpu"),
                 download: bool = True) -> dict:
    """The wheels dataset and its manifest: this project's wheel (pure Python) and, for every Python in
    ``python_versions``, each faiss variant with its dependencies. ``download=False`` ships this project
    alone (the kernel then stops at once, saying faiss is missing)."""
    platforms = platforms or KAGGLE_PLATFORMS
    python_versions = list(dict.fromkeys(python_versions))
    manifest: dict = {"schema": MANIFEST_SCHEMA, "package": build_project_wheel(folder), "pythons": python_versions,
                      "platforms": platforms, "faiss": {}}
    for variant in faiss if download else ():
        spec = FAISS[variant]
        wheels = {}
        for version in python_versions:
            names = download_wheels(folder, spec["requirement"], version, platforms)
            wheels[tag_of_version(version)] = next(n for n in names if n.startswith(spec["prefix"]))
        manifest["faiss"][variant] = {**{k: v for k, v in spec.items() if k != "prefix"}, "wheels": wheels}
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
    for name, array in (("train_descriptors.npy", np.asarray(descriptors, np.float16)),  # no copy if float16
                        ("train_labels.npy", np.asarray(labels, np.int64))):
        with atomic_path(folder / name) as tmp, tmp.open("wb") as handle:
            np.save(handle, array)
    (folder / "train_ids.txt").write_text("\n".join(ids) + "\n")
    _write_json(folder / TRAIN_MARKER, {"descriptors": "train_descriptors.npy", "labels": "train_labels.npy",
                                        "ids": "train_ids.txt", "count": len(ids), "dim": int(descriptors.shape[1]),
                                        "tta": tta, "checkpoint_sha256": checkpoint_sha})


def check_describes(net, path: Path, infer_cfg: dict) -> int:
    """``net`` (loaded from ``path`` weights-only, as the kernel will) describes one image with ``infer_cfg``'s
    TTA as a finite 1 x dim row; its descriptor dimension. A file that would fail on Kaggle fails here."""
    import torch

    from ..infer.features import tta_module

    size = infer_cfg["image_size"]
    with torch.no_grad():
        descriptor = tta_module(net.eval(), infer_cfg)(torch.rand(1, 3, size, max(32, size * 3 // 4)))
    if tuple(descriptor.shape) != (1, net.dim) or not torch.isfinite(descriptor).all():
        raise KernelError(f"{path} describes an image as a {tuple(descriptor.shape)} array with non-finite values "
                          f"or not 1 x {net.dim}; it would fail on Kaggle: retrain or pass another CHECKPOINT")
    return net.dim


def _pack_ensemble(model: Path, ensemble: dict, first: Path) -> dict:
    """Copy the members' checkpoints (the first is ``checkpoint.pt`` already) and the whitening into
    ``model``; the marker's description of them."""
    (model / "members").mkdir()
    listed = []
    for i, member in enumerate(ensemble["members"]):
        source = Path(member["checkpoint"])
        name = "checkpoint.pt" if source.resolve() == Path(first).resolve() else f"members/{i:02d}-{member['run']}.pt"
        if name != "checkpoint.pt":
            write_describe_only(source, model / name)
        listed.append({"run": member["run"], "weight": float(member["weight"]), "checkpoint": name,
                       "sha256": sha256(model / name)})
    shutil.copy2(ensemble["whitening"], model / "whitening.npz")
    return {"members": listed, "whitening": "whitening.npz"}


def write_describe_only(source: Path, target: Path) -> Path:
    """The checkpoint's net alone (meta and weights): no optimiser state, no mined plan, and no ArcFace class
    centres (on GLDv2 a gigabyte the notebook would upload and never read). ``checkpoint_sha256`` in the
    marker still names the trained file, which train features are keyed by."""
    import torch  # noqa: PLC0415

    from ..model.backbone import load_torch_file  # noqa: PLC0415

    payload = load_torch_file(source, "checkpoint")
    with atomic_path(target) as tmp:
        torch.save({"meta": payload["meta"], "state_dict": payload["state_dict"]}, tmp)
    return target


def check_machine_shape(shape: str) -> None:
    """A retired accelerator runs on its replacement without a word from the server: refused with that name."""
    if not shape or not shape.strip():
        raise ConfigError(f"MACHINE_SHAPE is empty; name the accelerator (default {DEFAULT_MACHINE_SHAPE}, two T4s)")
    if shape in RETIRED_MACHINE_SHAPES:
        instead = RETIRED_MACHINE_SHAPES[shape]
        raise ConfigError(f"MACHINE_SHAPE={shape} is retired on Kaggle (sessions run on {instead} instead); "
                          f"use MACHINE_SHAPE={instead}")


def build(out: str | Path, slug: str, checkpoint: str | Path, user: str, infer_cfg: dict, infer_source: str,
          download_deps: bool = True, python_versions: tuple[str, ...] | list[str] = KAGGLE_PYTHONS,
          platforms: list[str] | None = None, faiss: tuple[str, ...] = ("gpu", "cpu"),
          train_features: dict | None = None, ensemble: dict | None = None,
          machine_shape: str = DEFAULT_MACHINE_SHAPE) -> dict[str, Path]:
    """Write the folders; ``train_features`` = {descriptors, ids, labels, tta} adds the third dataset.
    ``infer_cfg`` is what the kernel runs with (the recipe's or the checkpoint's own ``infer``) and
    ``infer_source`` says which, for the marker and the kernel's first log lines.
    ``ensemble`` = {members: [{run, weight, checkpoint}], whitening: path}: the model dataset carries every
    member's checkpoint (``checkpoint`` is the first's) and the ensemble's saved whitening.
    ``machine_shape``: the accelerator the kernel asks for (kaggle's name; without one the server picks)."""
    check_machine_shape(machine_shape)
    out = Path(out)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train first or pass CHECKPOINT=...")
    names = ["wheels", "model", "kernel"] + (["train-features"] if train_features is not None else [])
    with staged_folder(out, "kernel --out") as staging:  # a failure anywhere leaves the last build as it was
        folders = {name: staging / name for name in names}
        for folder in folders.values():
            folder.mkdir(parents=True)
        build_wheels(folders["wheels"], python_versions, platforms, faiss, download_deps)
        checkpoint_sha = sha256(checkpoint)
        ids = {name: f"{user}/{slug}-remap-{name}" for name in folders if name != "kernel"}
        for name, ref in ids.items():
            _write_json(folders[name] / "dataset-metadata.json",
                        {"title": f"{slug} REMAP {name}", "id": ref, "licenses": [{"name": "apache-2.0"}]})
        write_describe_only(checkpoint, folders["model"] / "checkpoint.pt")
        marker = {"checkpoint_sha256": checkpoint_sha, "competition": slug, "infer": infer_cfg,
                  "infer_source": infer_source, "shipped_sha256": sha256(folders["model"] / "checkpoint.pt")}
        if ensemble is not None:
            marker["ensemble"] = _pack_ensemble(folders["model"], ensemble, checkpoint)
        _write_json(folders["model"] / MODEL_MARKER, marker)
        if train_features is not None:
            write_train_features(folders["train-features"], train_features["descriptors"], train_features["ids"],
                                 train_features["labels"], train_features["tta"], checkpoint_sha)
        (folders["kernel"] / "entry.py").write_text(standalone_entry())
        _write_json(folders["kernel"] / "kernel-metadata.json", {
            "id": f"{user}/{slug}-remap", "title": f"{slug} REMAP", "code_file": "entry.py", "language": "python",
            "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_internet": False,
            "machine_shape": machine_shape,
            "dataset_sources": list(ids.values()), "competition_sources": [slug], "kernel_sources": [],
            "model_sources": [],
        })
    return {name: out / name for name in names}
