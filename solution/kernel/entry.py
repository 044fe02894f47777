"""Kaggle kernel entry script (``make kernel`` ships it as ``entry.py``, with gpu_archs.py, contract.py and
discovery.py inlined; standard library only).

1. finds the wheels dataset under the input root by its manifest, checks it holds this project and a faiss
   wheel for the running Python (else one ``error:`` line naming the interpreter and what the dataset
   holds, before any GPU work), and installs them offline: GPU faiss when the model's index is IVF-PQ and
   its wheel has code for every GPU of the notebook, else CPU faiss (exact search, QE and DBA run on every
   GPU through torch either way);
2. imports torch, this package and then faiss before any GPU work (torch's CUDA libraries first), and logs
   the files they came from; GPU faiss is installed only when the model's index is IVF-PQ, the one faiss
   GPU index the pipeline builds;
3. hands over to ``solution.kernel.run``: find the competition and the model, plan, describe, search, write
   <working>/submission.csv. The notebook's clock (``KERNEL_STARTED_AT``) starts before the install.

Kaggle mounts data at ``/kaggle/input/<slug>/`` (older notebooks), ``/kaggle/input/competitions/<slug>/``
and ``/kaggle/input/datasets/<owner>/<slug>/``; every lookup here is a bounded search under the input root,
so any of them works. Each failure is one ``error:`` line that says what was found instead.

Environment: KAGGLE_INPUT_ROOT and KAGGLE_WORKING_DIR override /kaggle/input and /kaggle/working;
KERNEL_TIME_LIMIT_S is the notebook limit (default 9 hours); KERNEL_FULL=1 forces the full run on the
public test set (0/false/no/off or unset: not); KERNEL_PUBLIC_MAX (default 1129) is the largest test set
taken for the public one. A malformed value is one ``error:`` line naming it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

# <contract> `make kernel` puts the text of gpu_archs.py, contract.py and discovery.py here: the shipped script
# must run before anything is installed
from ..gpu_archs import faiss_gpu_serves
from .contract import (
    MANIFEST_SCHEMA,
    MODEL_MARKER,
    WHEELS_MANIFEST,
    KernelError,
    faiss_wheel,
    last_line,
    python_tag,
    shipped_tags,
)
from .discovery import find_models, find_wheels

# </contract>
log = logging.getLogger("entry")


def gpu_capabilities() -> list[float]:
    """Compute capability of each visible NVIDIA GPU ([] without one), asked of nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def pip_install(wheels: Path, *args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--quiet", "--disable-pip-version-check",
               "--find-links", str(wheels), *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise KernelError(f"pip could not install {' '.join(args)} from {wheels}: {last_line(result.stderr)}")


def faiss_serves_gpu() -> bool:
    """Whether an installed faiss imports and sees a GPU, asked in a fresh process (a failed import of a
    GPU build can leave this one unable to import any faiss)."""
    probe = "import faiss, sys; sys.exit(0 if faiss.get_num_gpus() > 0 else 3)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode == 0


def index_type(models: list[Path]) -> str:
    """The ``infer.index.type`` the first model dataset's marker asks for (``flat`` when it names none)."""
    marker = models[0] / MODEL_MARKER
    try:
        settings = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise KernelError(f"the model marker {marker} cannot be read as JSON ({exc}); rebuild the model dataset "
                          "with `make kernel`") from None
    infer = settings.get("infer") if isinstance(settings, dict) else None
    index = infer.get("index") if isinstance(infer, dict) else None
    return str(index.get("type", "flat")) if isinstance(index, dict) else "flat"


def choose_faiss(manifest: dict, capabilities: list[float], tag: str | None = None,
                 gpu_index: bool = True) -> list[str]:
    """The faiss variants to try for this interpreter, in order: ``gpu`` only when a faiss GPU index will be
    built (``gpu_index``: IVF-PQ) and its wheel serves every GPU (its library has no code for the others).
    Exact search, QE and DBA run on any GPU through torch and never call faiss on the GPU; GPU faiss then
    brings only its own CUDA libraries into the process, so CPU faiss is installed."""
    tag = tag or python_tag()
    order = []
    gpu = faiss_wheel(manifest, "gpu", tag)
    archs = manifest.get("faiss", {}).get("gpu", {}).get("archs", [])
    if capabilities and gpu and not gpu_index:
        log.info("the index is exact (torch on the GPU): CPU faiss, whose GPU build would only load its own "
                 "CUDA libraries")
    elif capabilities and gpu:
        if all(faiss_gpu_serves(c, archs) for c in capabilities):
            order.append("gpu")
        else:
            log.info("GPU faiss holds code for sm_%s only, this notebook's GPUs are %s: exact search runs on the "
                     "GPU through torch, CPU faiss serves IVF-PQ", "/sm_".join(a.replace(".", "") for a in archs),
                     capabilities)
    if faiss_wheel(manifest, "cpu", tag):
        order.append("cpu")
    return order


def check_manifest(wheels: Path, tag: str | None = None) -> dict:
    """The manifest, after checking every wheel it names is there and that a faiss wheel exists for this
    interpreter's Python (a wheel for another one would not install, and search would silently fall back)."""
    tag = tag or python_tag()
    try:
        manifest = json.loads((wheels / WHEELS_MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise KernelError(f"{wheels / WHEELS_MANIFEST} is unreadable ({exc}); rebuild it with `make kernel`") from None
    if not isinstance(manifest, dict):
        raise KernelError(f"{wheels / WHEELS_MANIFEST} holds a JSON {type(manifest).__name__}, not the manifest's "
                          "object; rebuild it with `make kernel`")
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise KernelError(f"the wheels dataset {wheels} was built by an older `make kernel` (manifest schema "
                          f"{manifest.get('schema', 1)}, this kernel reads {MANIFEST_SCHEMA}); rebuild and version it")
    malformed = [key for key, kind in (("package", str), ("files", list), ("faiss", dict))
                 if key in manifest and not isinstance(manifest[key], kind)]
    if "package" not in manifest or malformed:
        raise KernelError(f"{wheels / WHEELS_MANIFEST} " + (f"has a malformed '{malformed[0]}'" if malformed else
                          "names no package (this project's wheel)") + "; rebuild it with `make kernel`")
    missing = [name for name in [*manifest.get("files", []), manifest["package"]] if not (wheels / name).is_file()]
    if missing:
        raise KernelError(f"the wheels dataset {wheels} lacks {', '.join(missing[:4])}"
                          f"{' ...' if len(missing) > 4 else ''}; rebuild it with `make kernel` and version it")
    if not manifest.get("faiss"):
        raise KernelError(f"the wheels dataset {wheels} holds no faiss wheel (Kaggle's image has no faiss); "
                          "rebuild it with `make kernel` without --no-download")
    if tag not in shipped_tags(manifest):
        version = f"{tag[2]}.{tag[3:]}"
        raise KernelError(f"this notebook runs Python {version} ({tag}), but the wheels dataset {wheels} holds "
                          f"faiss for {', '.join(shipped_tags(manifest)) or 'no Python'}; rebuild it with "
                          f"`make kernel KAGGLE_PYTHONS=\"{version}\"` (or add {version} to the list) and version it")
    return manifest


def install(wheels: Path, capabilities: list[float] | None = None, gpu_index: bool = True) -> str:
    """Install this project and faiss from ``wheels`` (GPU faiss only for a faiss GPU index, ``gpu_index``);
    returns the faiss variant in use (``gpu`` or ``cpu``). torch and this package are imported before faiss,
    so torch's CUDA libraries are the process's own, not those a faiss build loads first."""
    manifest = check_manifest(wheels)
    tag = python_tag()
    pip_install(wheels, "--no-deps", str(wheels / manifest["package"]))
    capabilities = gpu_capabilities() if capabilities is None else capabilities
    for variant in choose_faiss(manifest, capabilities, tag, gpu_index):
        spec = manifest["faiss"][variant]
        try:
            pip_install(wheels, str(wheels / faiss_wheel(manifest, variant, tag)))
        except KernelError as exc:
            log.warning("%s; trying the next faiss", exc)
            continue
        if variant == "cpu" or faiss_serves_gpu():
            break
        log.warning("GPU faiss was installed but cannot use this GPU; falling back to CPU faiss")
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", spec["requirement"]],
                       capture_output=True, check=False)
    else:
        raise KernelError(f"no faiss from {wheels} could be installed for this notebook "
                          f"(Python {tag}, GPUs: {capabilities or 'none'})")
    importlib.invalidate_caches()
    modules = {}
    for module in ("torch", "solution.kernel.run", "faiss"):
        try:
            modules[module] = importlib.import_module(module)
        except ImportError as exc:
            raise KernelError(f"{module} does not import after installing from {wheels}: {exc}") from None
    log.info("installed %s and %s faiss (%s) from %s", manifest["package"], variant, tag, wheels)
    log.info("imported faiss from %s and solution from %s", getattr(modules["faiss"], "__file__", "?"),
             getattr(sys.modules.get("solution"), "__file__", "?"))
    return variant


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its version check would wait on the missing network
    input_root = Path(os.environ.get("KAGGLE_INPUT_ROOT", "/kaggle/input"))
    working = Path(os.environ.get("KAGGLE_WORKING_DIR", "/kaggle/working"))
    # The notebook's clock starts here, before the install: the time plan counts from this moment.
    os.environ.setdefault("KERNEL_STARTED_AT", repr(time.time()))
    started = time.perf_counter()
    try:
        wheels = find_wheels(input_root)
        install(wheels, gpu_index=index_type(find_models(input_root)) == "ivfpq")
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("stage install: %.0fs", time.perf_counter() - started)
    # The installed package's own KernelError: this script runs as __main__, a different module.
    from solution.kernel.contract import KernelError as InstalledKernelError
    from solution.kernel.run import run_from_env

    working.mkdir(parents=True, exist_ok=True)
    try:
        run_from_env(input_root, working, os.environ)
    except InstalledKernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
