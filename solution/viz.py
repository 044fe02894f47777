"""Pictures people look at: data contact sheets and training curves."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from .atomic import atomic_path
from .data.gldv2 import image_path, read_train_clean
from .data.images import try_load_image


def _save_png(image: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, out: str | Path) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def kl_heatmap(weights, layers: list[int], out: str | Path) -> Path:
    """REMAP's region weights as a layers x regions heat map."""
    import numpy as np

    plt = _pyplot()
    weights = np.asarray(weights)
    fig, ax = plt.subplots(figsize=(max(6, weights.shape[1] * 0.22), 1.2 + 0.5 * weights.shape[0]))
    image = ax.imshow(weights, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(layers)), [f"stage {i}" for i in layers])
    ax.set_xlabel("region (R-MAC order: coarse to fine, last = whole image)")
    ax.set_title("REMAP region weights (KL divergence, mean 1)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    return _save_figure(fig, out)


def region_weights_before_after(initial, trained, layers: list[int], out: str | Path) -> Path:
    """REMAP's region weights at their KL start, after training, and the change, as three heat maps."""
    import numpy as np

    plt = _pyplot()
    initial, trained = np.asarray(initial), np.asarray(trained)
    fig, axes = plt.subplots(3, 1, figsize=(max(6, initial.shape[1] * 0.22), 3 * (0.9 + 0.45 * initial.shape[0])))
    top = max(initial.max(), trained.max())
    change = trained - initial
    bound = max(abs(change).max(), 1e-6)
    for ax, values, title, cmap, low, high in (
            (axes[0], initial, "KL start", "viridis", 0, top), (axes[1], trained, "after training", "viridis", 0, top),
            (axes[2], change, "change (after - start)", "coolwarm", -bound, bound)):
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=low, vmax=high)
        ax.set_yticks(range(len(layers)), [f"stage {i}" for i in layers])
        ax.set_title(f"REMAP region weights: {title}")
        fig.colorbar(image, ax=ax, fraction=0.03)
    axes[2].set_xlabel("region (R-MAC order: coarse to fine, last = whole image)")
    fig.tight_layout()
    return _save_figure(fig, out)


def kl_regions_on_image(image_path_: str | Path, regions, weights, layers: list[int], out: str | Path) -> Path:
    """The regions drawn on a sample image, one panel per layer, coloured by weight (thicker = heavier)."""
    import numpy as np
    from matplotlib import cm
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    image = np.asarray(try_load_image(image_path_) or Image.new("RGB", (256, 192), (128, 128, 128)))
    height, width = image.shape[:2]
    weights = np.asarray(weights)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 4), squeeze=False)
    norm = plt.Normalize(weights.min(), weights.max())
    for ax, layer, row in zip(axes[0], layers, weights):
        ax.imshow(image)
        for r in np.argsort(row):  # heaviest drawn last, on top
            x0, y0, x1, y1 = regions[r]
            ax.add_patch(Rectangle((x0 * width, y0 * height), (x1 - x0) * width, (y1 - y0) * height, fill=False,
                                   edgecolor=cm.viridis(norm(row[r])), linewidth=0.5 + 3 * norm(row[r])))
        ax.set_title(f"stage {layer}")
        ax.axis("off")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes[0].tolist(), fraction=0.02)
    return _save_figure(fig, out)


def training_curves(metrics_csv: str | Path, out: str | Path) -> Path | None:
    """Loss, mining statistics and validation mAP per epoch, redrawn after every epoch."""
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    columns = [c for c in ("loss", "val_map", "val_queries_map", "d_pos", "d_neg", "easy_frac")
               if c in frame and frame[c].notna().any()]
    if frame.empty or not columns:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.plot(frame["epoch"], frame[column], marker="o")
        ax.set_title(column)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return _save_figure(fig, out)


def tuple_preview(dataset, count: int, out: str | Path) -> Path:
    """The first ``count`` augmented tuples: query, positive, then the negatives, one row each."""
    import numpy as np

    rows = [dataset[i][0] for i in range(count)]
    cell = 112
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * (cell + 4), len(rows) * (cell + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, images in enumerate(rows):
        for c, tensor in enumerate(images):
            image = Image.fromarray(tensor.permute(1, 2, 0).numpy().astype(np.uint8))
            image.thumbnail((cell, cell))
            sheet.paste(image, (c * (cell + 4), r * (cell + 4)))
            draw.text((c * (cell + 4) + 3, r * (cell + 4) + 2), ("query", "positive")[c] if c < 2 else f"neg {c - 1}",
                      fill=(255, 255, 0))
    return _save_png(sheet, Path(out))


def retrieval_gallery(data_dir: str | Path, ranking: tuple, out: str | Path, solution: dict | None = None,
                      queries: int = 8, topk: int = 8, cell: int = 112) -> Path:
    """Each query beside its top hits; with ground truth, hits are framed green (right) or red (wrong)."""
    query_ids, index_ids, neighbours = ranking[:3]
    chosen = [i for i, q in enumerate(query_ids) if solution is None or solution.get(q, ([], ""))[0]][:queries]
    rows = []
    for qi in chosen:
        relevant = set(solution[query_ids[qi]][0]) if solution else set()
        tiles = [("query", image_path(data_dir, "test", query_ids[qi]), QUERY_FRAME)]
        for j in neighbours[qi][:topk]:
            if j >= 0:
                colour = None if solution is None else ((30, 170, 60) if index_ids[j] in relevant else (210, 40, 40))
                tiles.append((index_ids[j][:6], image_path(data_dir, "index", index_ids[j]), colour))
        rows.append(tiles)
    return tile_rows(rows, out, topk, cell)


QUERY_FRAME = (60, 60, 200)


def tile_rows(rows: list[list[tuple[str, Path, tuple | None]]], out: str | Path, topk: int, cell: int = 112) -> Path:
    """One row per query: (label, image, frame colour or None) tiles, the query first, set apart by a gap."""
    sheet = Image.new("RGB", ((topk + 1) * (cell + 6) + 10, max(1, len(rows)) * (cell + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, tiles in enumerate(rows):
        y = r * (cell + 6)
        for c, (label, path, colour) in enumerate(tiles):
            x = c * (cell + 6) + (10 if c else 0)
            if colour is not None:
                draw.rectangle([x, y, x + cell + 5, y + cell + 5], fill=colour)
            image = try_load_image(path)
            if image is not None:
                image.thumbnail((cell, cell))
                sheet.paste(image, (x + 3 + (cell - image.width) // 2, y + 3 + (cell - image.height) // 2))
            draw.text((x + 5, y + 4), label, fill=(255, 255, 0))
    return _save_png(sheet, Path(out))
