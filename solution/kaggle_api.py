"""The one place this project calls the ``kaggle`` package.

``import kaggle`` prints a notice when no credentials exist and its ``authenticate()`` exits the process,
so the package is imported lazily, only after credentials are found where the package itself looks for
them, and its exit becomes our own one-line error. Credentials are never printed or logged.

kaggle 2.x returns error objects instead of raising (``competition_submit``, ``dataset_create_new``,
``dataset_create_version``, ``kernels_push``): every response is checked here, and a failure is a
``KaggleError``. ``datasets create`` on a slug in use is such an error, so whether a dataset exists is
asked of the API first. Large single files download as ``<name>.zip`` and are unzipped here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path, PurePosixPath

HOW_TO = ("put kaggle.json (kaggle.com > Settings > API > Create New Token) in ~/.kaggle/ with chmod 600, "
          "or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN (KAGGLE_CONFIG_DIR moves kaggle.json)")
SUBMIT_FAILED = "Could not submit to competition"  # kaggle 2.x's message for an upload that did not complete


class KaggleError(RuntimeError):
    """Kaggle could not be reached or refused the request; the message never holds a secret."""


def package_major(default: int = 2) -> int:
    try:
        return int(metadata.version("kaggle").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return default


def config_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where the package looks for kaggle.json: KAGGLE_CONFIG_DIR, else ~/.kaggle, else (2.x, Linux, when
    ~/.kaggle does not exist) $XDG_CONFIG_HOME/kaggle."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    folder = home / ".kaggle"
    if not folder.exists() and package_major() >= 2:
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return folder


def credentials_source(env: Mapping[str, str] | None = None, home: Path | None = None,
                       major: int | None = None) -> str | None:
    """Where credentials would come from, in the package's order, or None. Names places, never values.

    2.x: KAGGLE_API_TOKEN, then ~/.kaggle/access_token (a fixed path: KAGGLE_CONFIG_DIR does not move it),
    then kaggle.json in the config folder, then KAGGLE_USERNAME/KAGGLE_KEY, then OAuth's credentials.json.
    1.x: kaggle.json, then KAGGLE_USERNAME/KAGGLE_KEY."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    major = package_major() if major is None else major
    if major >= 2:
        if env.get("KAGGLE_API_TOKEN"):
            return "KAGGLE_API_TOKEN"
        for name in ("access_token", "access_token.txt"):
            if (home / ".kaggle" / name).is_file():
                return str(home / ".kaggle" / name)
    if (config_dir(env, home) / "kaggle.json").is_file():
        return str(config_dir(env, home) / "kaggle.json")
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if major >= 2 and (home / ".kaggle" / "credentials.json").is_file():
        return str(home / ".kaggle" / "credentials.json")
    return None


def _make_client():
    """An authenticated ``KaggleApi``. Tests replace this function with a fake: the boundary."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    api.authenticate()
    return api


def check_kaggle_json(path: Path) -> None:
    """A kaggle.json the package could not use is our one line, before the package prints its own notice."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KaggleError(f"{path} is not valid JSON ({type(exc).__name__}); download a new token: {HOW_TO}") from None
    if not isinstance(data, dict) or not data.get("username") or not data.get("key"):
        raise KaggleError(f"{path} lacks \"username\" and \"key\"; download a new token: {HOW_TO}")


def check_access_token(path: Path) -> None:
    """A token file the package would choke on (not text, empty) is our one line; its value is never shown."""
    try:
        token = path.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KaggleError(f"{path} is not a readable UTF-8 token ({type(exc).__name__}); download a new token: "
                          f"{HOW_TO}") from None
    if not token or any(c.isspace() for c in token):
        raise KaggleError(f"{path} does not hold one token on one line; download a new token: {HOW_TO}")


def client():
    source = credentials_source()
    if source is None:
        raise KaggleError(f"no Kaggle credentials found: {HOW_TO}")
    if source.endswith("kaggle.json"):
        check_kaggle_json(Path(source))
    elif source.endswith(("access_token", "access_token.txt")):
        check_access_token(Path(source))
    quiet = io.StringIO()
    try:
        # The package prints a multi-line notice on import and again when authentication fails; our
        # one line below says the same, so its own output is kept out of the terminal.
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            return _make_client()
    except SystemExit:
        raise KaggleError(f"Kaggle rejected the credentials in {source}: {HOW_TO}") from None
    except Exception as exc:  # no network, a proxy, a token the package cannot parse: one line, no secret
        raise _failure(f"authenticating with Kaggle ({source})", exc) from None


def read_metadata(path: Path, keys: tuple[str, ...]) -> dict:
    """A ``*-metadata.json`` that `make kernel` writes, checked to be a JSON object with ``keys``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KaggleError(f"{path} does not exist; run `make kernel` first") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KaggleError(f"{path} is not valid JSON ({type(exc).__name__}); run `make kernel` again to "
                          "rewrite it") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise KaggleError(f"{path} lacks {', '.join(repr(k) for k in missing)}; run `make kernel` again to "
                          "rewrite it")
    return data


def _redact(text: str) -> str:
    for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text


def _status_code(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _failure(what: str, exc: Exception) -> KaggleError:
    """One line, without secrets, for whatever the package raised (it raises many kinds)."""
    code = _status_code(exc)
    detail = f"HTTP {code}" if code else type(exc).__name__
    return KaggleError(f"{what} failed: {detail}: {_redact(' '.join(str(exc).split())[:300])}")


def _call(what: str, function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``; whatever it raises becomes one KaggleError line naming ``what``."""
    try:
        return function(*args, **kwargs)
    except KaggleError:
        raise
    except Exception as exc:
        raise _failure(what, exc) from None


def _check_response(what: str, response) -> None:
    """Raise when a 2.x response object carries an error (they are returned, not raised)."""
    if response is None:
        raise KaggleError(f"{what} failed: Kaggle returned nothing")
    error = getattr(response, "error", None)
    if error:
        raise KaggleError(f"{what} failed: Kaggle answered: {_redact(str(error))}")


def _check_submission(what: str, response) -> int | None:
    """The submission's ref; a failed upload comes back as a message, with no ref."""
    if response is None:
        raise KaggleError(f"{what} failed: Kaggle returned nothing")
    if isinstance(response, str):  # kaggle 1.x returned the message
        message, ref = response, None
    else:
        message, ref = getattr(response, "message", "") or "", getattr(response, "ref", None)
    if message == SUBMIT_FAILED or (not ref and not message.lower().startswith("successfully")):
        raise KaggleError(f"{what} failed: Kaggle answered: {_redact(message) or 'no submission reference'}")
    return ref or None


def submit(slug: str, path: str | Path, message: str) -> int | None:
    """Upload a CSV submission to competition ``slug``; returns Kaggle's submission ref."""
    api = client()
    what = f"upload of {path} to {slug}"
    return _check_submission(what, _call(what, api.competition_submit, file_name=str(path), message=message,
                                         competition=slug))


def submit_kernel(slug: str, kernel: str | None, version: int | None, message: str,
                  file_name: str = "submission.csv") -> int | None:
    """Submit version ``version`` of notebook ``owner/slug`` (whose output is ``file_name``) to ``slug``."""
    if not kernel or "/" not in kernel or not version:
        raise KaggleError("a code submission needs --kernel owner/notebook and --version N "
                          "(the version `kaggle push` printed)")
    api = client()
    what = f"submission of {kernel} version {version} to {slug}"
    return _check_submission(what, _call(what, api.competition_submit_code, file_name=file_name, message=message,
                                         competition=slug, kernel=kernel, kernel_version=int(version)))


def dataset_status(api, ref: str) -> str | None:
    """The dataset's status (``ready``, ``pending``, ``error``...), or None when it does not exist."""
    try:
        return str(api.dataset_status(ref)).lower()
    except Exception as exc:
        if _status_code(exc) == 404:
            return None
        raise _failure(f"status of dataset {ref}", exc) from None


def publish_dataset(api, folder: Path, notes: str = "update") -> str:
    """Create the dataset in ``folder`` when Kaggle has none under its id, else add a version. Subfolders are
    zipped (the package skips them by default)."""
    ref = read_metadata(folder / "dataset-metadata.json", ("id", "title"))["id"]
    if dataset_status(api, ref) is None:
        what = f"creating dataset {ref}"
        response = _call(what, api.dataset_create_new, str(folder), public=False, quiet=True, dir_mode="zip")
    else:
        what = f"versioning dataset {ref}"
        response = _call(what, api.dataset_create_version, str(folder), notes, quiet=True, dir_mode="zip")
    _check_response(what, response)
    return ref


def wait_ready(api, refs: list[str], timeout_s: float, poll_s: float = 15.0,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until every dataset is ready: a kernel pushed earlier starts without its inputs."""
    clock = time.monotonic
    deadline = clock() + timeout_s
    pending = list(refs)
    while pending:
        status = {ref: dataset_status(api, ref) for ref in pending}
        failed = [ref for ref, s in status.items() if s in ("error", "failed", "deleted", None)]
        if failed:
            raise KaggleError(f"dataset {failed[0]} is {status[failed[0]] or 'missing'} on Kaggle; see its page")
        pending = [ref for ref, s in status.items() if s != "ready"]
        if pending and clock() >= deadline:
            raise KaggleError(f"datasets {', '.join(pending)} were not ready after {timeout_s:.0f}s; "
                              "push again later (nothing else was changed)")
        if pending:
            sleep(poll_s)


def push_kernel(api, folder: Path) -> tuple[str, int | None]:
    """Push the notebook in ``folder``; returns (owner/slug, version number)."""
    ref = read_metadata(folder / "kernel-metadata.json", ("id", "dataset_sources"))["id"]
    what = f"pushing kernel {ref}"
    response = _call(what, api.kernels_push, str(folder))
    _check_response(what, response)
    # kaggle 2.x saves the kernel without the sources it cannot resolve (a dataset not yet visible, a
    # competition whose rules are not accepted) and only prints them; the kernel would then fail on Kaggle.
    for kind in ("dataset", "competition", "kernel", "model"):
        invalid = getattr(response, f"invalid_{kind}_sources", None) or getattr(
            response, f"invalid{kind.title()}Sources", None)
        if invalid:
            fix = ("accept the competition's rules on its page" if kind == "competition" else
                   f"check that the {kind} exists, is yours or public, and is ready")
            raise KaggleError(f"Kaggle saved kernel {ref} without its {kind} sources {', '.join(map(str, invalid))}; "
                              f"{fix}, then push again")
    version = getattr(response, "version_number", None) or getattr(response, "versionNumber", None)
    return ref, version


def push(folder: Path, wait_s: float = 1800, poll_s: float = 15.0, sleep: Callable[[float], None] = time.sleep
         ) -> list[str]:
    """`make kernel`'s output to Kaggle: each dataset created or versioned, all of them ready, then the kernel.
    Returns what was pushed, the kernel last with its version."""
    kernel = folder / "kernel"
    if not (kernel / "kernel-metadata.json").is_file():
        raise KaggleError(f"{kernel}/kernel-metadata.json does not exist; run `make kernel` first")
    datasets = [p for p in sorted(folder.iterdir()) if (p / "dataset-metadata.json").is_file()]
    wanted = read_metadata(kernel / "kernel-metadata.json", ("id", "dataset_sources"))["dataset_sources"]
    for dataset in datasets:  # every file checked before anything is sent
        read_metadata(dataset / "dataset-metadata.json", ("id", "title"))
    api = client()
    refs = [publish_dataset(api, d) for d in datasets]
    missing = sorted(set(wanted) - set(refs))
    if missing:
        raise KaggleError(f"the kernel needs {', '.join(missing)}, which {folder} does not hold; run `make kernel`")
    wait_ready(api, refs, wait_s, poll_s, sleep=sleep)
    ref, version = push_kernel(api, kernel)
    return [*refs, f"{ref} version {version}"]


def safe_unzip(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip, refusing absolute paths and ``..``; returns the files written."""
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for member in members:
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise KaggleError(f"{archive}: member '{member.filename}' would leave {dest}")
        for member in members:
            handle.extract(member, dest)
    return [dest / m.filename for m in members if not m.is_dir()]


def download_competition(slug: str, dest: str | Path, files: list[str] | None = None) -> list[Path]:
    """Competition files into ``dest``: the named ``files`` one by one, or everything as one archive.
    Returns paths that exist.

    The package skips files already complete and resumes partial ones; a file it saved zipped
    (``<name>.zip``) and the whole-competition archive are unzipped (safely), the archive once, then marked
    ``.<slug>.unzipped`` so a second run does nothing.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    api = client()
    if files:
        written = []
        for name in files:
            _call(f"download of {name} from {slug}", api.competition_download_file, slug, name, path=str(dest),
                  quiet=False)
            target, zipped = dest / name, dest / f"{name}.zip"
            if zipped.is_file():
                safe_unzip(zipped, target.parent)
                zipped.unlink()
            if not target.is_file():
                raise KaggleError(f"download of {name} from {slug} left no {target}; check the file name with "
                                  f"`kaggle competitions files {slug}`")
            written.append(target)
        return written
    marker = dest / f".{slug}.unzipped"
    if not marker.is_file():
        _call(f"download of {slug}", api.competition_download_files, slug, path=str(dest), quiet=False)
        for archive in sorted(dest.glob("*.zip")):
            safe_unzip(archive, dest)
            archive.unlink()
        marker.write_text("ok\n")
    return sorted(p for p in dest.iterdir() if not p.name.startswith("."))
