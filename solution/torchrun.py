"""The one reader of the environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE): a plain
process is rank 0 of a world of one. Imports nothing heavy, so the lowest modules may ask it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    local_world: int = 1
    launched: bool = False  # LOCAL_RANK is set: started by torchrun, even as a world of one

    @property
    def active(self) -> bool:
        return self.world > 1


def launch(env: Mapping[str, str] | None = None) -> Launch:
    """This process's place in a torchrun launch; a value that is not a whole number is a ValueError naming it."""
    env = os.environ if env is None else env
    values = {}
    for field, name, default in (("rank", "RANK", 0), ("local_rank", "LOCAL_RANK", 0), ("world", "WORLD_SIZE", 1),
                                 ("local_world", "LOCAL_WORLD_SIZE", 1)):
        text = env.get(name, "").strip()
        try:
            values[field] = int(text) if text else default
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a whole number; torchrun sets it: unset it, or launch "
                             "through torchrun") from None
    return Launch(**values, launched=bool(env.get("LOCAL_RANK", "").strip()))
