"""Revisited Oxford and Paris (Radenovic et al. 2018): images, ground truth, query crops.

The ground truth is a pickle, which can run code when loaded. It is read only
from the known source, and through :class:`RestrictedUnpickler`, which admits
the plain containers and numpy arrays the file holds and nothing else.

Layout under ``<root>/<dataset>/``: ``jpg/<name>.jpg`` and ``gnd_<dataset>.pkl``.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path

from PIL import Image

from .download import Retry, fetch, safe_extract
from .gldv2 import DataError
from .images import load_image

DATASETS = {
    "roxford5k": {"images": ["https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz"]},
    "rparis6k": {"images": ["https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz",
                            "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz"]},
}
GND_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl"

_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "str"), ("builtins", "int"),
    ("builtins", "float"), ("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "bool"), ("builtins", "complex"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    # numpy 1 (numpy.core) and numpy 2 (numpy._core) names: arrays up to protocol 4, protocol-5 buffers, scalars
    *((f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core")),
    *((f"numpy.{core}.multiarray", "scalar") for core in ("core", "_core")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class UnsafePickle(pickle.UnpicklingError):
    """The pickle asked for a global outside the allowed plain types."""


def python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a global in a protocol 0-2 pickle (``__builtin__.set`` -> ``builtins.set``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Renamed before the check: Python 2 era pickles name their builtins ``__builtin__``.
        module, name = python3_name(module, name)
        if (module, name) not in _ALLOWED:
            raise UnsafePickle(f"refusing to load {module}.{name} from a ground-truth pickle")
        return super().find_class(module, name)


def load_gnd(path: str | Path) -> dict:
    """``gnd_<dataset>.pkl`` -> {'imlist', 'qimlist', 'gnd'}; only plain types are admitted."""
    data = Path(path).read_bytes()
    try:
        gnd = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickle:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); it may be truncated: "
                        "delete it and download it again (--download)") from None
    if not isinstance(gnd, dict):
        raise DataError(f"{path}: not a revisitop ground truth (a {type(gnd).__name__}, not a dict)")
    missing = {"imlist", "qimlist", "gnd"} - set(gnd)
    if missing:
        raise DataError(f"{path}: not a revisitop ground truth (lacks {sorted(missing)})")
    return gnd


def download(root: str | Path, name: str, retry: Retry | None = None) -> Path:
    """Images (extracted safely, flat into ``jpg/``) and the ground truth of ``name``."""
    retry = retry or Retry()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {sorted(DATASETS)}")
    folder = Path(root) / name
    gnd_path = fetch(GND_URL.format(name=name), folder / f"gnd_{name}.pkl", retry)
    gnd = load_gnd(gnd_path)
    wanted = set(gnd["imlist"]) | set(gnd["qimlist"])
    for url in DATASETS[name]["images"]:
        archive = folder / "archives" / url.rsplit("/", 1)[1]
        if not (archive.with_suffix(".done")).is_file():
            fetch(url, archive, retry)
            safe_extract(archive, folder / "raw", keep=wanted)
            archive.with_suffix(".done").write_text("ok\n")
    jpg = folder / "jpg"
    jpg.mkdir(exist_ok=True)
    for path in (folder / "raw").rglob("*.jpg"):
        target = jpg / path.name
        if not target.exists():
            path.replace(target)
    return folder


def query_image(folder: Path, gnd: dict, index: int) -> Image.Image:
    """Query ``index``, cropped to its bounding box as the protocol requires."""
    image = load_image(folder / "jpg" / f"{gnd['qimlist'][index]}.jpg")
    x1, y1, x2, y2 = (float(v) for v in gnd["gnd"][index]["bbx"])
    return image.crop((int(x1), int(y1), int(round(x2)), int(round(y2))))
