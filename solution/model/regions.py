"""The fixed region grid REMAP and R-MAC pool over.

Regions follow the R-MAC rule (Tolias et al.; cirtorch's ``roipool``): square
regions at ``levels`` scales with about ``overlap`` between neighbours, laid on
a reference map (default 32 x 24, where four scales give exactly 40 regions),
plus the whole image. They are stored once in relative coordinates, so the same
list, and the same learned weight per region, applies to every layer, input
size and aspect ratio. On a given map a box is rounded outwards to whole cells
and never becomes empty.
"""

from __future__ import annotations

import math

import numpy as np


def rmac_regions(width: int, height: int, levels: int = 4, overlap: float = 0.4) -> np.ndarray:
    """R x 4 boxes (x0, y0, x1, y1) in cells of a ``width`` x ``height`` map, level by level."""
    short = min(width, height)
    steps = np.arange(2, 8)
    spacing = (max(width, height) - short) / (steps - 1)
    extra = int(np.argmin(np.abs((short**2 - short * spacing) / short**2 - overlap))) + 1
    extra_w, extra_h = (extra, 0) if height < width else ((0, extra) if height > width else (0, 0))
    boxes = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        half = math.floor(side / 2 - 1)
        starts = []
        for size, extra_n in ((width, extra_w), (height, extra_h)):
            n = level + extra_n
            step = (size - side) / (n - 1) if n > 1 else 0.0
            starts.append([math.floor(half + i * step) - half for i in range(n)])
        boxes.extend((x, y, x + side, y + side) for y in starts[1] for x in starts[0])
    return np.asarray(boxes, dtype=np.float64)


def region_grid(levels: int = 4, overlap: float = 0.4, reference: tuple[int, int] = (32, 24),
                whole: bool = True) -> np.ndarray:
    """R x 4 relative boxes in [0, 1]^2: the R-MAC regions of the reference map, then the whole image."""
    width, height = reference
    boxes = rmac_regions(width, height, levels, overlap) / np.array([width, height, width, height])
    if whole:
        boxes = np.vstack([boxes, [0.0, 0.0, 1.0, 1.0]])
    return np.clip(boxes, 0.0, 1.0)


def boxes_to_cells(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Relative boxes -> integer cell ranges [x0, x1) x [y0, y1) on an ``height`` x ``width`` map, never empty."""
    boxes = np.asarray(boxes, dtype=np.float64)
    x0 = np.clip(np.floor(boxes[:, 0] * width + 1e-6), 0, width - 1)
    y0 = np.clip(np.floor(boxes[:, 1] * height + 1e-6), 0, height - 1)
    x1 = np.clip(np.ceil(boxes[:, 2] * width - 1e-6), x0 + 1, width)
    y1 = np.clip(np.ceil(boxes[:, 3] * height - 1e-6), y0 + 1, height)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
