"""Result files and the tables rendered from them: no figure in the docs is typed by hand.

Every experiment command writes a result JSON beside its run (``train.json``, ``submit.json``,
``ablation.json``, ``tune.json``, ``heads.json``, ``ensemble.json``) with a ``kind`` and its provenance:
the command line, the commit (and whether the tree had changes), a hash of the resolved config, the time.
``python -m solution results --add runs/.../x.json`` files one under ``docs/results/``; ``python -m
solution results`` (``make results``) renders every block of the form::

    <!-- results: heads-toy-eq.json -->
    ...generated...
    <!-- /results -->

in the README and ``docs/*.md`` from the file it names. ``--check`` only reports blocks that differ, which
is what the test suite asserts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from .atomic import atomic_path
from .config import ConfigError, range_table

BLOCK = re.compile(r"<!-- results: (?P<name>[\w.-]+\.json) -->\n(?P<body>.*?)<!-- /results -->", re.S)
REPO = Path(__file__).resolve().parent.parent
# The command being run, as given to cli.main (which may not be sys.argv: tests, notebooks); set per call.
_COMMAND: ContextVar[list[str] | None] = ContextVar("command", default=None)


@contextlib.contextmanager
def command_line(argv: list[str]) -> Iterator[None]:
    """Within it, results record ``argv`` as the command that made them."""
    token = _COMMAND.set(list(argv))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def config_hash(cfg: dict) -> str:
    """sha1 (first 10 hex digits) of the resolved config, keys sorted: equal configs, equal hashes."""
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def provenance(cfg: dict | None = None, argv: list[str] | None = None) -> dict:
    """What made a result: command line, commit (``dirty`` when the tree had uncommitted changes), config
    hash, UTC time."""
    argv = argv if argv is not None else _COMMAND.get() or sys.argv[1:]
    commit = _git("rev-parse", "HEAD")
    return {"command": "python -m solution " + shlex.join(argv), "commit": commit or "unknown",
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None,
            "config_sha1": config_hash(cfg) if cfg is not None else None,
            "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def content_digest(result: dict) -> str:
    """sha1 of a result's content (everything but its provenance), as JSON with sorted keys."""
    content = {k: v for k, v in result.items() if k != "provenance"}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def write_result(path: str | Path, kind: str, data: dict, cfg: dict | None = None) -> Path:
    """``data`` with its ``kind`` and :func:`provenance`, written atomically as JSON; the provenance seals the
    content with its :func:`content_digest`, so a figure edited by hand afterwards is told from a measured one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(json.dumps({"kind": kind, **data}, default=str))  # as it will read back
    result["provenance"] = {**provenance(cfg), "content_sha1": content_digest(result)}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return path


def check_result(result: dict, path: Path) -> None:
    """A result fit to file and render: it says what made it, and its content is what was measured."""
    made = result.get("provenance")
    if not isinstance(made, dict) or not made.get("command") or not made.get("commit"):
        raise ConfigError(f"{path} says nothing of what made it (no provenance with a command and a commit): "
                          "file the JSON a study wrote under runs/, not one written by hand")
    sealed = made.get("content_sha1")
    if sealed and sealed != content_digest(result):
        raise ConfigError(f"{path} was changed after it was measured (its content no longer matches the digest "
                          "its run sealed it with): run the study again rather than edit its figures")


TABLES: dict[str, Callable[[dict], str]] = {}


def result_table(kind: str) -> Callable[[Callable[[dict], str]], Callable[[dict], str]]:
    """Register the decorated function as the table of results of ``kind``. The modules that write results
    register their own (``solution.studies`` imports them all), so this module imports nothing above it."""
    def register(table: Callable[[dict], str]) -> Callable[[dict], str]:
        TABLES[kind] = table
        return table
    return register


def render(result: dict) -> str:
    """The block for one result file: where it came from, then its table."""
    kind = result.get("kind")
    if kind not in TABLES:
        raise ConfigError(f"result kind '{kind}' has no table; known: {', '.join(sorted(TABLES))}")
    made = result.get("provenance", {})
    commit = (made.get("commit") or "unknown")[:7] + (" with uncommitted changes" if made.get("dirty") else "")
    head = f"Made by `{made.get('command', '?')}` at commit {commit}, config {made.get('config_sha1')}."
    try:
        table = TABLES[kind](result).rstrip()
    except (KeyError, AttributeError, TypeError, IndexError, ValueError) as exc:
        raise ConfigError(f"a '{kind}' result cannot be drawn as its table ({type(exc).__name__}: {exc}): file the "
                          "JSON the study wrote, unedited") from None
    return f"{head}\n\n{table}\n"


def load_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; run the experiment and file its result with "
                          "`python -m solution results --add runs/<run>/<kind>.json`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a result JSON ({exc}); file it again with results --add") from None
    if not isinstance(result, dict) or "kind" not in result:
        raise ConfigError(f"{path} has no 'kind': not a result file written by this package")
    return result


RANGES = re.compile(r"<!-- config ranges -->\n.*?<!-- /config ranges -->", re.S)


def rendered(text: str, results_dir: Path) -> str:
    """``text`` with every results block regenerated from its file (each checked first), and the config's
    range table regenerated from its rules."""
    def block(m) -> str:
        path = results_dir / m["name"]
        result = load_result(path)
        check_result(result, path)
        return f"<!-- results: {m['name']} -->\n{render(result)}<!-- /results -->"

    ranges = f"<!-- config ranges -->\n{range_table()}\n<!-- /config ranges -->"
    return RANGES.sub(lambda m: ranges, BLOCK.sub(block, text))


def documents(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render_documents(root: Path = REPO, check: bool = False) -> list[Path]:
    """Regenerate every block (``check``: only list the files whose blocks differ); returns those files."""
    results_dir, changed = root / "docs" / "results", []
    for doc in documents(root):
        text = doc.read_text()
        new = rendered(text, results_dir)
        if new != text:
            changed.append(doc)
            if not check:
                with atomic_path(doc) as tmp:
                    tmp.write_text(new)
    return changed


def add_result(source: str | Path, name: str | None = None, root: Path = REPO) -> Path:
    """File a run's result JSON under ``docs/results/`` (as ``name``, default ``<kind>-<run folder>.json``)."""
    source = Path(source)
    result = load_result(source)
    check_result(result, source)
    render(result)  # a result with no table is refused before it is filed
    target = root / "docs" / "results" / (name or f"{result['kind']}-{source.parent.name}.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return target


FIGURE = re.compile(r"[+-]?\b\d\.\d{4}\b")  # how every mAP here is printed: four places


def reproduces(run_result: str | Path, root: Path = REPO) -> tuple[Path, list[str]]:
    """(the filed result, the differences) between a run's result file and the one the docs show for it
    (``docs/results/<kind>-<run folder>.json``): their tables' four-place figures, in order. No difference:
    the run reproduces every figure the docs print (its commit, time and seconds may differ)."""
    run_result = Path(run_result)
    result = load_result(run_result)
    filed = root / "docs" / "results" / f"{result.get('kind')}-{run_result.parent.name}.json"
    if not filed.is_file():
        raise ConfigError(f"no filed result {filed} to compare {run_result} with; file it first: "
                          f"`make results ADD={run_result}`")
    new, old = FIGURE.findall(render(result)), FIGURE.findall(render(load_result(filed)))
    differences = [f"figure {i + 1}: {a} in the run, {b} in the docs" for i, (a, b) in enumerate(zip(new, old))
                   if a != b]
    if len(new) != len(old):
        differences.append(f"the run's table has {len(new)} figures, the docs' {len(old)}")
    return filed, differences


def figures_outside_blocks(text: str) -> list[str]:
    """Four-decimal figures (how every mAP here is printed) outside the generated blocks: typed by hand."""
    return FIGURE.findall(RANGES.sub("", BLOCK.sub("", text)))
