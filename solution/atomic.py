"""Atomic writes: a file is written under a temporary sibling name and renamed over its target, so a
reader, or a run resumed after a kill, never sees half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block ends, and is removed if it fails.

    The temporary name (``x.npy`` -> ``x.npy.tmp``) never ends in the real suffix, so a leftover from a
    killed process is never taken for data by a ``*.jpg`` or ``part-*.npy`` glob. Writers that pick a
    format by extension (PIL, matplotlib, np.save) must be given the format or a file handle.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno is None or exc.filename not in (None, str(tmp), tmp):
            raise
        # the user chose `path`; the temporary sibling is ours, so a fault while writing it names `path`
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


OWNED_MARKER = ".made-by-remap-landmarks"  # in every folder this project builds whole, and only there


def owned(folder: Path) -> bool:
    """Whether ``folder`` was built whole by this project (:func:`mark_owned` left its marker in it)."""
    return (folder / OWNED_MARKER).is_file()


def mark_owned(folder: Path, what: str) -> None:
    """Mark ``folder`` as built whole by this project, so a later build may replace it."""
    (folder / OWNED_MARKER).write_text(f"built by `python -m solution` ({what})\n")


def check_replaceable(target: str | Path, what: str) -> Path:
    """``target`` may be replaced: absent, an empty folder, or a folder this project built. Anything else
    (a file, a user's folder, ``runs/`` itself) is refused with a ``FolderNotOurs`` naming it, before any work."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not owned(target))):
        kind = "a file" if not target.is_dir() else "a folder this project did not build"
        raise FolderNotOurs(f"{what} {target} is {kind} (no {OWNED_MARKER} in it), so it is not replaced; "
                            f"choose a new or empty folder, or delete it yourself")
    return target


class FolderNotOurs(ValueError):
    """A folder a build would replace, but which this project did not build."""


@contextmanager
def staged_folder(target: str | Path, what: str) -> Iterator[Path]:
    """Yield an empty sibling of ``target`` to build in; when the block ends it replaces ``target`` (checked
    first by :func:`check_replaceable`) in two renames, and when the block fails it is removed and ``target``
    is left exactly as it was. The built folder carries :data:`OWNED_MARKER`, so the next build may replace it.
    """
    import shutil
    import tempfile

    target = check_replaceable(target, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        yield staging
        mark_owned(staging, what)
        check_replaceable(target, what)  # again: another process may have filled it meanwhile
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def copy_tree(source: str | Path, target: str | Path) -> int:
    """Copy ``source``'s files into ``target``, never following a link out of ``source`` or into a folder
    twice (a link loop cannot make it copy without end); returns the number of links left out."""
    import shutil

    source, target = Path(source), Path(target)
    root = source.resolve()
    skipped = 0
    for folder, dirs, files in os.walk(source):  # followlinks=False: linked folders are not entered
        here = Path(folder)
        out = target / here.relative_to(source)
        out.mkdir(parents=True, exist_ok=True)
        skipped += sum(1 for d in dirs if (here / d).is_symlink())
        for name in files:
            path = here / name
            if path.is_symlink() and (not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(root)):
                skipped += 1  # a broken link, a link to itself, or one leading out of the tree
                continue
            if path.is_file():
                shutil.copy2(path, out / name)
    return skipped


class RunBusy(RuntimeError):
    """Another command holds this run's lock."""


def first_rank() -> bool:
    """Whether this process is torchrun's rank 0 (or not under torchrun): the one that writes a run's files."""
    from .torchrun import launch

    return launch().rank == 0


@contextmanager
def run_lock(folder: str | Path, what: str) -> Iterator[None]:
    """One writer per run: an exclusive ``flock`` on ``<run>/.lock``, held for the block. The kernel drops it
    when the process ends, however it ends, so a killed run never leaves a stale lock. Under torchrun only
    the first rank takes it (the others write nothing of their own there)."""
    import fcntl

    if not first_rank():
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = " ".join(handle.read().split()) or "another process"
            raise RunBusy(f"run {folder} is in use by {holder}; wait for it to finish, or pass another "
                          f"run.name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"`{what}` (pid {os.getpid()})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
