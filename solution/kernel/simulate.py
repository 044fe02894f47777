"""A local dry run of the kernel, as unkind as a Kaggle notebook (``python -m solution kernel-dryrun``).

- ``mount`` lays out a fake input root from a competition folder and `make kernel`'s output, in Kaggle's old
  layout (``<root>/<slug>/``) or its current one (``competitions/<slug>/``, ``datasets/<owner>/<slug>/``),
  with only the images (no index.csv or test.csv, as on Kaggle); the test set can be padded to a given
  size (the 2021 public placeholder has 1,129 images).
- ``notebook_python`` makes a virtual environment that sees this machine's packages (torch, numpy... as
  Kaggle's image has them) through a view of the host's site-packages that leaves out faiss and this
  project entirely (modules, ``.dist-info``, ``.libs``, editable finders and ``.pth`` files), so pip finds
  neither installed and must install them from the wheels dataset, as on Kaggle; a ``sitecustomize`` also
  refuses to import either from anywhere but the notebook's own site-packages. Every path is absolute, so
  the notebook behaves the same whatever the caller's working folder.
- ``run_entry`` runs the kernel's entry.py there with the network cut (``unshare -rn``) where possible.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import numpy as np

from ..atomic import copy_tree
from ..data.gldv2 import image_path

log = logging.getLogger(__name__)

SLUG = "landmark-retrieval-2021"
HIDER = '''
import importlib.machinery, os, sys

ALLOWED = os.environ["NOTEBOOK_SITE"]


class _OnlyFromNotebookSite:
    """faiss and solution import only from the notebook's own site-packages (what pip installed there)."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("faiss", "solution"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [ALLOWED])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not installed in the notebook)", name=name)
        return spec


sys.meta_path.insert(0, _OnlyFromNotebookSite())
'''


def _copy_split(source: Path, target: Path, count: int | None, seed: int = 0) -> None:
    """``source``'s a/b/c/<id>.jpg tree into ``target``; with ``count``, padded with copies under new ids."""
    skipped = copy_tree(source, target)  # links out of the competition folder, or in a loop, are left out
    if skipped:
        log.warning("%s: %d links leading out of it (or into a loop) were not copied", source, skipped)
    if count is None:
        return
    images = sorted(target.glob("*/*/*/*.jpg"))
    rng = np.random.default_rng(seed)
    for n in range(max(0, count - len(images))):
        new_id = "f" + "".join(rng.choice(list("0123456789abcdef"), 15))
        path = image_path(target.parent, target.name, new_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images[n % len(images)], path)


def mount(kaggle_dir: Path, competition_dir: Path, root: Path, layout: str = "new", test_images: int | None = None,
          datasets: tuple[str, ...] = ("wheels", "model", "train-features"), owner: str = "someone") -> Path:
    """A fake input root at ``root``; datasets that `make kernel` did not write are left out."""
    if layout == "old":
        competition, dataset_root = root / SLUG, root
    elif layout == "new":
        competition, dataset_root = root / "competitions" / SLUG, root / "datasets" / owner
    else:
        raise ValueError(f"unknown layout '{layout}'; use old or new")
    competition.mkdir(parents=True)
    _copy_split(competition_dir / "index", competition / "index", None)
    _copy_split(competition_dir / "test", competition / "test", test_images)
    shutil.copy(competition_dir / "sample_submission.csv", competition)
    for name in datasets:
        if (kaggle_dir / name).is_dir():
            copy_tree(kaggle_dir / name, dataset_root / f"{SLUG}-remap-{name}")
    return root


HIDDEN_FROM_NOTEBOOK = ("faiss", "solution", "remap_landmarks", "remap-landmarks")  # what Kaggle's image lacks


def _hidden(name: str) -> bool:
    """Whether a site-packages entry belongs to faiss or this project (``faiss/``, ``faiss_cpu-1.15.dist-info``,
    ``faiss_gpu.libs``, ``__editable__.remap_landmarks-0.1.pth``, ``__editable___remap_landmarks_finder.py``)."""
    lowered = name.lower().lstrip("_").removeprefix("editable").lstrip("_.")
    return any(lowered == hidden or lowered.startswith((f"{hidden}-", f"{hidden}_", f"{hidden}."))
               for hidden in HIDDEN_FROM_NOTEBOOK)


def host_view(folder: Path, site_dirs: list[str] | None = None) -> Path:
    """A folder of links to everything in the host's site-packages except faiss and this project, and except
    ``.pth`` files (an editable install's path hook lives in one)."""
    view = Path(folder).resolve()
    view.mkdir(parents=True, exist_ok=True)
    for site in site_dirs or list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])):
        for entry in sorted(Path(site).iterdir()):
            if _hidden(entry.name) or entry.suffix == ".pth" or (view / entry.name).exists():
                continue
            (view / entry.name).symlink_to(entry.resolve())
    return view


def notebook_python(folder: Path) -> tuple[Path, dict[str, str], str]:
    """(python, environment, its site-packages) of a fresh notebook-like virtual environment in ``folder``."""
    folder = Path(folder).resolve()
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "host.pth").write_text(str(host_view(folder / "host-view")) + "\n")
    hider = folder / "hider"
    hider.mkdir(exist_ok=True)
    (hider / "sitecustomize.py").write_text(HIDER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KERNEL_", "KAGGLE_", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(hider), NOTEBOOK_SITE=str(Path(site).resolve()))
    return python, env, str(Path(site).resolve())


def network_blocker() -> list[str]:
    """``unshare -rn`` (a user namespace with no network) where the machine allows it, else nothing."""
    if not shutil.which("unshare"):
        return []
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return ["unshare", "-rn"] if probe.returncode == 0 else []


def run_entry(python: Path, env: dict[str, str], entry: Path, input_root: Path, working: Path,
              settings: dict[str, str] | None = None, timeout: float = 3600, capture: bool = True
              ) -> subprocess.CompletedProcess:
    input_root, working = Path(input_root).resolve(), Path(working).resolve()
    env = {**env, "KAGGLE_INPUT_ROOT": str(input_root), "KAGGLE_WORKING_DIR": str(working), **(settings or {})}
    working.parent.mkdir(parents=True, exist_ok=True)
    streams = {"capture_output": True} if capture else {}  # else the kernel writes to our own terminal
    command = [*network_blocker(), str(Path(python).absolute()), str(Path(entry).resolve())]
    return subprocess.run(command, cwd=working.parent, env=env, text=True,
                          timeout=timeout, check=False, **streams)
