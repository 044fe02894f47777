"""Where the kernel finds its inputs: bounded, breadth-first searches under the input root for the competition,
the wheels, the model datasets and the optional train features, each by its marker file. Kaggle mounts data at
``/kaggle/input/<slug>/``, ``/kaggle/input/competitions/<slug>/`` or ``/kaggle/input/datasets/<owner>/<slug>/``;
any of them works, and a failure says what the root holds instead.

Standard library only, importing nothing of this package but ``contract.py``: ``make kernel`` inlines it into
the shipped ``entry.py`` after contract.py, and ``run.py`` imports it, so neither needs the other.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

from .contract import MODEL_MARKER, TRAIN_MARKER, WHEELS_MANIFEST, KernelError

MAX_DEPTH = 4  # /kaggle/input/datasets/<owner>/<slug> is 3 deep; one more for a folder inside a dataset


def walk_dirs(root: Path, max_depth: int = MAX_DEPTH, stop: Callable[[Path], bool] | None = None
              ) -> Iterator[Path]:
    """Folders under ``root`` to ``max_depth``, breadth first; a folder for which ``stop`` holds is yielded
    but not entered (a competition's image tree holds thousands of folders)."""
    level = [root]
    for _ in range(max_depth):
        below = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for child in children:
                yield child
                if stop is None or not stop(child):
                    below.append(child)
        level = below


def is_competition(folder: Path) -> bool:
    return (folder / "test").is_dir() and (folder / "index").is_dir() and (folder / "sample_submission.csv").is_file()


def _stop(folder: Path) -> bool:
    return is_competition(folder) or folder.name in {"train", "index", "test"}


def found_summary(root: Path) -> str:
    """What the input root holds, for error lines: folders two levels down and any known marker."""
    if not root.is_dir():
        return f"{root} does not exist"
    seen = [str(p.relative_to(root)) for p in walk_dirs(root, 2, _stop)]
    return f"{root} holds {', '.join(seen[:12]) or 'nothing'}" + (" ..." if len(seen) > 12 else "")


def find_marked(root: Path, predicate: Callable[[Path], bool], what: str, fix: str) -> list[Path]:
    found = [p for p in walk_dirs(root, MAX_DEPTH, _stop) if predicate(p)]
    if not found:
        raise KernelError(f"no {what} within {MAX_DEPTH} levels of {root} ({found_summary(root)}); {fix}")
    return found


def find_wheels(root: Path) -> Path:
    return find_marked(root, lambda p: (p / WHEELS_MANIFEST).is_file(), f"wheels dataset ({WHEELS_MANIFEST})",
                       "attach the wheels dataset built by `make kernel`")[0]


def find_models(root: Path) -> list[Path]:
    return find_marked(root, lambda p: (p / MODEL_MARKER).is_file() and (p / "checkpoint.pt").is_file(),
                       f"model dataset ({MODEL_MARKER} beside checkpoint.pt)",
                       "attach the model dataset built by `make kernel`")


def find_competition(root: Path) -> Path:
    return find_marked(root, is_competition, "competition folder (test/, index/ and sample_submission.csv)",
                       "add the competition's data to the notebook")[0]


def find_train_features(root: Path) -> Path | None:
    """The optional train-descriptors dataset (``make kernel TRAIN_FEATURES=1``), or None."""
    found = [p for p in walk_dirs(root, MAX_DEPTH, _stop) if (p / TRAIN_MARKER).is_file()]
    return found[0] if found else None
