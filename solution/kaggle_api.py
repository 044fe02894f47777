"""The one place this project calls the ``kaggle`` package.

``import kaggle`` prints a notice when no credentials exist and its
``authenticate()`` exits the process, so the package is imported lazily, only
after credentials are found where the package itself looks for them, and its
exit becomes our own one-line error. Credentials are never printed or logged.
"""

from __future__ import annotations

import os
from pathlib import Path

HOW_TO = ("put kaggle.json (kaggle.com > Settings > API > Create New Token) in ~/.kaggle/ with chmod 600, "
          "or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN (KAGGLE_CONFIG_DIR moves the folder)")


class KaggleError(RuntimeError):
    """Kaggle could not be reached or refused the request; the message never holds a secret."""


def config_dir(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def credentials_source(env: dict | None = None) -> str | None:
    """Where credentials would come from, in the package's order, or None. Names places, never values."""
    env = os.environ if env is None else env
    folder = config_dir(env)
    if env.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if (folder / "access_token").is_file():
        return str(folder / "access_token")
    if (folder / "kaggle.json").is_file():
        return str(folder / "kaggle.json")
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    return None


def _make_client():
    """An authenticated ``KaggleApi``. Tests replace this function with a fake: the boundary."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    api.authenticate()
    return api


def client():
    if credentials_source() is None:
        raise KaggleError(f"no Kaggle credentials found: {HOW_TO}")
    try:
        return _make_client()
    except SystemExit:
        raise KaggleError(f"Kaggle rejected the credentials in {credentials_source()}: {HOW_TO}") from None


def submit(slug: str, path: str | Path, message: str) -> None:
    """Upload a CSV submission to competition ``slug``."""
    try:
        client().competition_submit(file_name=str(path), message=message, competition=slug)
    except KaggleError:
        raise
    except Exception as exc:  # the package raises many kinds; ours is one line without secrets
        raise KaggleError(f"upload of {path} to {slug} failed: {type(exc).__name__}: {_redact(str(exc))}") from None


def _redact(text: str) -> str:
    for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text


def safe_unzip(archive: Path, dest: Path) -> int:
    """Extract a zip, refusing absolute paths and ``..``; returns the number of files written."""
    import zipfile
    from pathlib import PurePosixPath

    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for member in members:
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise KaggleError(f"{archive}: member '{member.filename}' would leave {dest}")
        for member in members:
            handle.extract(member, dest)
    return sum(not m.is_dir() for m in members)


def download_competition(slug: str, dest: str | Path, files: list[str] | None = None) -> list[Path]:
    """Competition files into ``dest``: the named ``files`` one by one, or everything as one archive.

    The package skips files already complete and resumes partial ones; an archive is unzipped (safely)
    once, then marked ``.<slug>.unzipped`` so a second run does nothing.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    api = client()
    try:
        if files:
            for name in files:
                api.competition_download_file(slug, name, path=str(dest), quiet=False)
            return [dest / name for name in files]
        marker = dest / f".{slug}.unzipped"
        if marker.is_file():
            return sorted(dest.iterdir())
        api.competition_download_files(slug, path=str(dest), quiet=False)
        for archive in sorted(dest.glob("*.zip")):
            safe_unzip(archive, dest)
            archive.unlink()
        marker.write_text("ok\n")
        return sorted(dest.iterdir())
    except KaggleError:
        raise
    except Exception as exc:
        raise KaggleError(f"download of {slug} failed: {type(exc).__name__}: {_redact(str(exc))}") from None
