"""``python -m solution <stage>``: the command line's one boundary. The stages live in ``solution/commands``
(each ``cmd_*`` registered with its own arguments); here are the shared options, argparse's errors as one
line, and the error boundary: a user's mistake or a machine's fault is one ``error:`` line (exit 2), an
interrupt one ``interrupted:`` line (exit 130; 143 for SIGTERM), and anything else a bug with its traceback."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from .config import ConfigError


def _add_common_args(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default)
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error (also SOLUTION_DEBUG=1, true or yes)")


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per registered stage: its own arguments, plus the shared ones declared once here."""
    parser = Parser(prog="python -m solution", description=__doc__)
    _add_common_args(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    _add_common_args(common, argparse.SUPPRESS)  # before or after the stage's name, without resetting it
    from .commands import STAGES

    for name, spec in STAGES.items():
        p = sub.add_parser(name, parents=[common], help=spec.help)
        if spec.config:
            p.add_argument("--config", default=spec.config_default,
                           help="experiment YAML: a path or a name in solution/configs")
            p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")
        for names, options in spec.arguments:
            p.add_argument(*names, **options)
        p.set_defaults(func=spec.func)
    return parser


class UsageError(ConfigError):
    """A command line argparse rejects: reported as one ``error:`` line, like every other user error."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors raised, not printed with a usage block: main() gives them one ``error:`` line."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message}; see `{self.prog} --help`")


def debug_requested(args: argparse.Namespace | None, env: dict | os._Environ = os.environ) -> bool:
    """``--debug`` anywhere on the line, or SOLUTION_DEBUG set to 1, true or yes (any case)."""
    return bool(getattr(args, "debug", False)) or env.get("SOLUTION_DEBUG", "").strip().lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from .results import command_line
    from .runtime import keep_freed_memory, setup_logging

    keep_freed_memory()
    argv = sys.argv[1:] if argv is None else list(argv)
    interrupted = threading.Event()
    received: list[int] = []  # the signal that interrupted the command
    previous: dict[int, object] = {}

    def on_interrupt(signum, frame):
        # Set first: an interrupt that lands where Python swallows exceptions (a DataLoader worker's fork,
        # a __del__) still ends the command as interrupted.
        received.append(signum)
        interrupted.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        # SIGTERM too (a scheduler's kill, torchrun stopping the other ranks): the same one line and the same
        # clean-up as Ctrl-C, instead of dying without a word
        previous = {sig: signal.signal(sig, on_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    args = None
    try:
        args = _parse(build_parser(), argv)
        setup_logging(args.verbose)
        with command_line(argv):
            code = args.func(args)
    except KeyboardInterrupt:
        interrupted.set()
    except user_errors() as exc:
        if debug_requested(args, os.environ) or (args is None and "--debug" in argv):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted.is_set():
        terminated = signal.SIGTERM in received
        print(f"interrupted{' (SIGTERM)' if terminated else ''}: completed files are kept; run the same command "
              "again to resume", file=sys.stderr)
        return 143 if terminated else 130
    return code


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    # argparse cannot give a nargs="*" positional the key=value pairs that follow an option
    # (`viz retrieval --config toy a=b`); collect those leftovers as overrides instead.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def one_line(exc: BaseException) -> str:
    """The error's message on one line; an OSError names its path and says what the errno means and what to do."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.errno in OS_HINTS:
        what = f"{exc.filename}: " if exc.filename else "writing (the system named no file): "
        return f"{what}{os.strerror(exc.errno).lower()} ({errno.errorcode[exc.errno]}); {OS_HINTS[exc.errno]}"
    return " ".join(str(exc).split())


OS_HINTS = {
    errno.EROFS: "the filesystem is read-only: point the output (run.dir, --out, infer.index.spill_dir) elsewhere",
    errno.ENOSPC: "the disk is full: free space, or point the output (run.dir, --out, spill_dir) at another disk; "
                  "completed files are kept, so the same command resumes",
    errno.EDQUOT: "the disk quota is used up: free space or point the output at another disk",
    errno.EACCES: "permission denied: check the owner and mode of the file or folder, or choose another",
    errno.EPERM: "operation not permitted: check the owner and mode of the file or folder, or choose another",
    errno.EISDIR: "a folder stands where a file must be written: remove it or choose another path",
    errno.ENOTDIR: "a file stands where a folder must be: remove it or choose another path",
    errno.EEXIST: "it already exists: remove it or choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EMFILE: "too many open files: raise `ulimit -n` or lower run.workers",
}


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a user's mistake, a bad input or a fault of the machine (a full disk, a
    read-only folder), each with a message that names the file or key and the fix: they end in one ``error:``
    line. Anything else is a bug and keeps its traceback."""
    from .atomic import FolderNotOurs, RunBusy
    from .data.gldv2 import DataError
    from .data.images import ImageLoadError
    from .data.revisitop import UnsafePickle
    from .distributed import RankFailed
    from .infer.features import CacheError, MergeError
    from .infer.submission import SubmissionError
    from .kaggle_api import KaggleError
    from .kernel.contract import KernelError
    from .model.backbone import WeightError
    from .train.loop import TrainingDiverged

    return (ConfigError, RankFailed, DataError, ImageLoadError, SubmissionError, WeightError, OSError, MergeError,
            CacheError, KaggleError, KernelError, UnsafePickle, TrainingDiverged, FolderNotOurs, RunBusy)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
