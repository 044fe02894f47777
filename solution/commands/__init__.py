"""Every stage of ``python -m solution``, registered when its module is imported, in the order ``--help``
lists them."""

import importlib

from .registry import STAGES

for _module in ("data", "train", "infer", "studies", "kernel", "tools"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["STAGES"]
