"""Pictures people look at: data contact sheets and training curves."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw

from .data.gldv2 import image_path, read_train_clean
from .data.images import try_load_image


def _save_png(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)
    return path


def thumbnail_grid(rows: list[tuple[str, list[Path]]], cell: int = 128, label_width: int = 110) -> Image.Image:
    """A grid with one labelled row per entry; each image is letterboxed into a square cell."""
    columns = max((len(paths) for _, paths in rows), default=1)
    sheet = Image.new("RGB", (label_width + columns * (cell + 4), len(rows) * (cell + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, paths) in enumerate(rows):
        y = r * (cell + 4)
        draw.text((4, y + cell // 2 - 6), label, fill=(0, 0, 0))
        for c, path in enumerate(paths):
            image = try_load_image(path)
            if image is None:
                continue
            image.thumbnail((cell, cell))
            x = label_width + c * (cell + 4)
            sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
    return sheet


def data_contact_sheet(data_dir: str | Path, out: str | Path, landmarks: int = 6, views: int = 7) -> Path:
    """Rows of train landmarks, each with several of its views, read from ``train_clean.csv``."""
    data_dir = Path(data_dir)
    frame = read_train_clean(data_dir / "train_clean.csv")
    rows = []
    for landmark_id, group in list(frame.groupby("landmark_id", sort=True))[:landmarks]:
        paths = [image_path(data_dir, "train", i) for i in group["id"].head(views)]
        rows.append((f"landmark {landmark_id}", paths))
    return _save_png(thumbnail_grid(rows), Path(out))


def training_curves(metrics_csv: str | Path, out: str | Path) -> Path | None:
    """Loss and mining statistics per epoch, redrawn after every epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    if frame.empty:
        return None
    columns = [c for c in ("loss", "d_pos", "d_neg", "easy_frac") if c in frame]
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.plot(frame["epoch"], frame[column], marker="o")
        ax.set_title(column)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out)
    return out
