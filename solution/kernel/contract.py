"""What ``make kernel``, the kernel's entry script and its run share: the names of the markers that tie the
datasets together, the wheels manifest's schema, hashing and which faiss build serves which GPU.

Standard library only and importing nothing of this package: ``make kernel`` inlines this file into the
shipped ``entry.py``, which must run before anything is installed.
"""

import hashlib
import sys
from pathlib import Path

WHEELS_MANIFEST = "remap-wheels.json"
MODEL_MARKER = "remap-model.json"
TRAIN_MARKER = "remap-train-features.json"
MANIFEST_SCHEMA = 2  # 2: faiss wheels listed per Python tag ({"cp312": file, ...})


# Kaggle's accelerators as `machine_shape` names them (kaggle-cli docs): "NvidiaTeslaT4" is the default GPU,
# two T4s. Shapes Kaggle retired run on a replacement; the CLI accepts them with a warning only.
DEFAULT_MACHINE_SHAPE = "NvidiaTeslaT4"
RETIRED_MACHINE_SHAPES = {"NvidiaTeslaP100": "NvidiaTeslaT4"}


class KernelError(RuntimeError):
    """Something the kernel needs is missing or unusable; the message is the one line the user sees."""


def python_tag(version_info=None) -> str:
    """The CPython wheel tag of an interpreter: ``cp312`` for 3.12."""
    version_info = version_info or sys.version_info
    return f"cp{version_info[0]}{version_info[1]}"


def tag_of_version(version: str) -> str:
    """``3.12`` -> ``cp312``."""
    major, minor = version.split(".")[:2]
    return f"cp{int(major)}{int(minor)}"





def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def last_line(text: str) -> str:
    """The last non-blank line of a tool's output: pip ends with the line that says what went wrong."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def faiss_wheel(manifest: dict, variant: str, tag: str) -> str | None:
    """The file of faiss ``variant`` (gpu or cpu) built for Python ``tag``, or None when the dataset has none."""
    spec = manifest.get("faiss", {}).get(variant)
    return None if spec is None else spec.get("wheels", {}).get(tag)


def shipped_tags(manifest: dict) -> list[str]:
    """The Python tags for which the dataset holds at least one faiss wheel."""
    return sorted({tag for spec in manifest.get("faiss", {}).values() for tag in spec.get("wheels", {})})


def infer_summary(infer_cfg: dict) -> str:
    """The inference settings that decide cost and quality, in one line (marker, `make kernel`, kernel log)."""
    steps = [name for name in ("qe", "dba", "diffusion", "superglobal", "label_rerank")
             if infer_cfg.get(name, {}).get("enabled")]
    return (f"image_size={infer_cfg['image_size']} scales={infer_cfg['scales']} flip={infer_cfg['flip']} "
            f"index={infer_cfg['index']['type']}/{infer_cfg['index'].get('dtype', 'float32')} "
            f"steps={'+'.join(steps) or 'none'}"
            + (f" qe.n={infer_cfg['qe']['n']}" if infer_cfg["qe"]["enabled"] else "")
            + (f" dba.k={infer_cfg['dba']['k']}" if infer_cfg["dba"]["enabled"] else ""))
