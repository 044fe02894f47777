"""``make kernel``: three folders ready for ``kaggle datasets create -r zip`` and ``kaggle kernels push``.

    <out>/wheels/   this project as a wheel + the dependencies the Kaggle image lacks (never torch)
    <out>/model/    the checkpoint (it rebuilds its own network)
    <out>/kernel/   kernel-metadata.json (internet off, GPU on, sources filled in) and entry.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# On Kaggle's GPU image torch, torchvision, timm, albumentations, numpy, pandas, scikit-learn, PyYAML,
# Pillow, tqdm, joblib and matplotlib are preinstalled; faiss is not.
MISSING_ON_KAGGLE = ["faiss-gpu-cu12"]


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def build(out: str | Path, slug: str, checkpoint: str | Path, user: str, download_deps: bool = True,
          extra: list[str] | None = None) -> dict[str, Path]:
    out = Path(out)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train first or pass CHECKPOINT=...")
    folders = {name: out / name for name in ("wheels", "model", "kernel")}
    for folder in folders.values():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(folders["wheels"]),
                    str(REPO)], check=True)
    if download_deps:
        subprocess.run([*pip, "download", "--no-deps", "--only-binary", ":all:", "--quiet", "-d",
                        str(folders["wheels"]), *MISSING_ON_KAGGLE, *(extra or [])], check=True)
    if any(p.name.startswith("torch-") for p in folders["wheels"].iterdir()):
        raise RuntimeError("a torch wheel ended up in the wheels dataset; Kaggle's own torch must be kept")
    wheels_id, model_id = f"{user}/{slug}-remap-wheels", f"{user}/{slug}-remap-model"
    _write_json(folders["wheels"] / "dataset-metadata.json",
                {"title": f"{slug} REMAP wheels", "id": wheels_id, "licenses": [{"name": "apache-2.0"}]})
    shutil.copy2(checkpoint, folders["model"] / "checkpoint.pt")
    _write_json(folders["model"] / "dataset-metadata.json",
                {"title": f"{slug} REMAP model", "id": model_id, "licenses": [{"name": "apache-2.0"}]})
    shutil.copy2(Path(__file__).with_name("entry.py"), folders["kernel"] / "entry.py")
    _write_json(folders["kernel"] / "kernel-metadata.json", {
        "id": f"{user}/{slug}-remap", "title": f"{slug} REMAP", "code_file": "entry.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_internet": False,
        "dataset_sources": [wheels_id, model_id], "competition_sources": [slug], "kernel_sources": [],
        "model_sources": [],
    })
    return folders
