"""A retrieval check on real photographs: the sample images scikit-image and scikit-learn ship.

The toy competition is rendered; this set is not. Each scene (a real photograph; the motorcycle has a
second, real viewpoint) is photographed again as several views: crops and close-ups, rotation,
perspective, light and colour, sensor noise and JPEG. Texture photographs (brick, grass, gravel) cut
into many views are the distractors. Every view queries all the others; its relevant images are the
other views of its scene. A net that learned rendering artefacts instead of image content scores
lower here than it did off the shelf.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ..atomic import atomic_path
from .toy import _perspective_coeffs

GENERATOR = 2
SKIMAGE_SCENES = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field", "immunohistochemistry",
                  "retina", "rocket", "moon", "page")
SKLEARN_SCENES = ("china.jpg", "flower.jpg")
TEXTURES = ("brick", "grass", "gravel")


@dataclass(frozen=True)
class PhotoSet:
    views: int = 6             # per scene
    distractors: int = 300
    image_size: int = 256
    seed: int = 0


def _skimage(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise ImportError("scikit-image is missing; run `make setup` (it is in requirements.txt)") from None
    return getattr(data, name)()


def _rgb(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(np.asarray(array))
    return image.convert("RGB")


def _halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    w, h = image.size
    if w >= h:
        return image.crop((0, 0, w // 2, h)), image.crop((w - w // 2, 0, w, h))
    return image.crop((0, 0, w, h // 2)), image.crop((0, h - h // 2, w, h))


def scenes() -> dict[str, list[Image.Image]]:
    """Scene name -> its source photographs (the motorcycle: left and right cameras of a stereo pair).

    Every photograph is cut into two halves that are scenes of their own: the two halves of one
    photograph share its light, colours and textures, so telling them apart takes the content itself.
    """
    from sklearn.datasets import load_sample_image

    photos = {name: [_rgb(_skimage(name))] for name in SKIMAGE_SCENES}
    left, right, _ = _skimage("stereo_motorcycle")
    photos["motorcycle"] = [_rgb(left), _rgb(right)]
    for name in SKLEARN_SCENES:
        photos[name.removesuffix(".jpg")] = [_rgb(load_sample_image(name))]
    out = {}
    for name, sources in photos.items():
        cut = [_halves(source) for source in sources]
        out[f"{name}-a"] = [c[0] for c in cut]
        out[f"{name}-b"] = [c[1] for c in cut]
    return out


def photograph(source: Image.Image, rng: np.random.Generator, size: int, area: tuple[float, float]) -> bytes:
    """One new view of ``source``: crop, rotation, perspective, light, colour, noise and JPEG."""
    w, h = source.size
    share = rng.uniform(*area)
    aspect = rng.uniform(0.75, 1.33)
    cw, ch = min(w, w * np.sqrt(share * aspect)), min(h, h * np.sqrt(share / aspect))
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    view = source.crop((int(x0), int(y0), int(x0 + cw), int(y0 + ch)))
    view = view.rotate(rng.uniform(-20, 20), Image.BILINEAR, expand=False)
    vw, vh = view.size
    corners = np.array([[0, 0], [vw, 0], [vw, vh], [0, vh]], float)
    moved = corners + rng.uniform(-0.12, 0.12, (4, 2)) * [vw, vh]
    view = view.transform(view.size, Image.PERSPECTIVE, _perspective_coeffs(moved, corners), Image.BILINEAR)
    scale = size / max(view.size)
    view = view.resize((max(1, round(view.width * scale)), max(1, round(view.height * scale))), Image.BILINEAR)
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.6, 1.4))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.7, 1.3))
    view = ImageEnhance.Color(view).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.3:
        view = view.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    pixels = np.asarray(view, np.float32) * rng.uniform(0.88, 1.12, 3) + rng.normal(0, rng.uniform(0, 6), (1, 1, 1))
    pixels = pixels + rng.normal(0, rng.uniform(0, 5), pixels.shape[:2] + (1,))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(35, 92)))
    return buffer.getvalue()


def generate(root: str | Path, spec: PhotoSet = PhotoSet()) -> dict:
    """Write the views under ``root``; returns the ground truth {"images": [...], "scene": [...]} (None: distractor)."""
    root = Path(root)
    truth_path = root / "truth.json"
    stamp = {"generator": GENERATOR, **spec.__dict__}
    if truth_path.is_file():
        truth = json.loads(truth_path.read_text())
        if truth.get("stamp") == stamp and all((root / f).is_file() for f in truth["images"]):
            return truth
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([spec.seed, 11])
    images, labels = [], []
    for name, sources in scenes().items():
        for v in range(spec.views):
            data = photograph(sources[v % len(sources)], rng, spec.image_size, (0.25, 0.8))
            images.append(_write(root, f"{name}-{v:02d}.jpg", data))
            labels.append(name)
    textures = [_rgb(_skimage(name)) for name in TEXTURES]
    for d in range(spec.distractors):
        data = photograph(textures[d % len(textures)], rng, spec.image_size, (0.05, 0.6))
        images.append(_write(root, f"texture-{d:03d}.jpg", data))
        labels.append(None)
    truth = {"stamp": stamp, "images": images, "scene": labels}
    with atomic_path(truth_path) as tmp:
        tmp.write_text(json.dumps(truth))
    return truth


def _write(root: Path, name: str, data: bytes) -> str:
    with atomic_path(root / name) as tmp:
        tmp.write_bytes(data)
    return name


def leave_one_out(truth: dict) -> tuple[list[int], dict[int, set[int]]]:
    """Query indices (every scene view) and, per query, the indices of the other views of its scene."""
    labels = truth["scene"]
    queries = [i for i, lab in enumerate(labels) if lab is not None]
    relevant = {q: {i for i, lab in enumerate(labels) if lab == labels[q] and i != q} for q in queries}
    return queries, relevant
