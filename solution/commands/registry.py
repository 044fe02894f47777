"""The stage registry: each ``cmd_*`` function is registered with ``@stage``, its own arguments beside it;
:func:`solution.cli.build_parser` adds the shared ones (``--config``, overrides, ``--debug``, ``-v``) once."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..config import load_config


def whole(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (a size, a count), else argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def number(above: float | None = None, at_least: float | None = None, at_most: float | None = None):
    """An argparse type: a finite number in the given range."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value) or (above is not None and value <= above) or (
                at_least is not None and value < at_least) or (at_most is not None and value > at_most):
            bounds = [f"> {above}" if above is not None else "", f">= {at_least}" if at_least is not None else "",
                      f"<= {at_most}" if at_most is not None else ""]
            raise argparse.ArgumentTypeError(f"{value} is not {' and '.join(b for b in bounds if b)}")
        return value
    parse.__name__ = "number"
    return parse


@dataclass
class Stage:
    """A subcommand: the function it calls, its help line, its own arguments, and whether it reads a config
    (``--config`` and ``key=value`` overrides, declared once in :func:`build_parser`)."""
    func: Callable[[argparse.Namespace], int]
    help: str
    arguments: tuple
    config: bool
    config_default: str | None


STAGES: dict[str, Stage] = {}


def arg(*names: str, **options) -> tuple:
    """One argument of a stage, as ``add_argument`` takes it."""
    return names, options


def stage(name: str, help: str, *arguments: tuple, config: bool = True, config_default: str | None = "toy"):
    """Register the decorated ``cmd_*`` function as the subcommand ``name``, with its arguments beside it."""
    def register(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        STAGES[name] = Stage(func, help, arguments, config, config_default)
        return func
    return register


def words_apart(args: argparse.Namespace, is_override: Callable[[str], bool] = lambda word: "=" in word
                ) -> list[str]:
    """A stage's own positional words (query's images, bench's sections), which share the positional slot with
    the ``key=value`` overrides: they are taken out of ``args.overrides``, which keeps the overrides."""
    own = [word for word in args.overrides if not is_override(word)]
    args.overrides = [word for word in args.overrides if is_override(word)]
    return own


def config_of(args: argparse.Namespace) -> dict:
    return load_config(args.config, args.overrides)
