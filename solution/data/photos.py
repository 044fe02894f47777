"""A retrieval check on real photographs: sample photographs that installed packages ship.

The toy competition is rendered; this set is not, and its views share no code with the toy renderer:
they are albumentations pipelines. The sources are real photographs, outdoor scenes and buildings first
(scikit-image's camera, rocket and stereo motorcycle; scikit-learn's temple; PyWavelets' staircase tower
and aerial view; matplotlib's portrait), no microscopy or text. Each photograph is cut into two halves that
are scenes of their own (the halves share light and colour, so telling them apart takes the content),
and each scene is photographed again as hard views: crops down to a third of the photograph, rotation up
to 30 degrees, perspective, light and colour, greyscale, sensor noise and JPEG at quality 20-60. Texture
photographs (brick, grass, gravel) cut into many views are the distractors. Every view queries all the
others; its relevant images are the other views of its scene. The views of one photograph are not
independent, so the check's intervals resample photographs (``source`` in the ground truth).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image

from ..atomic import atomic_path
from .datasets import single_threaded_opencv

GENERATOR = 3
SKIMAGE_PHOTOS = ("camera", "rocket", "astronaut", "chelsea", "coffee")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
PYWT_PHOTOS = ("ascent", "aero")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
TEXTURES = ("brick", "grass", "gravel")


@dataclass(frozen=True)
class PhotoSet:
    views: int = 8             # per scene
    distractors: int = 300
    image_size: int = 256
    seed: int = 0


def _skimage(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise ImportError("scikit-image is missing; run `make setup` (it is in requirements.txt)") from None
    return getattr(data, name)()


def _pywt(name: str) -> np.ndarray:
    try:
        import pywt.data
    except ImportError:
        raise ImportError("PyWavelets is missing; run `make setup` (it is in requirements.txt)") from None
    return getattr(pywt.data, name)()


def _matplotlib(name: str) -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data(name) as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def _rgb(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(np.asarray(array).astype(np.uint8)).convert("RGB"))


def _halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    if w >= h:
        return image[:, : w // 2], image[:, w - w // 2:]
    return image[: h // 2], image[h - h // 2:]


def photographs() -> dict[str, list[np.ndarray]]:
    """Source photograph name -> its images (the motorcycle: left and right cameras of a stereo pair)."""
    from sklearn.datasets import load_sample_image

    photos = {name: [_rgb(_skimage(name))] for name in SKIMAGE_PHOTOS}
    left, right, _ = _skimage("stereo_motorcycle")
    photos["motorcycle"] = [_rgb(left), _rgb(right)]
    photos.update({name.removesuffix(".jpg"): [_rgb(load_sample_image(name))] for name in SKLEARN_PHOTOS})
    photos.update({name: [_rgb(_pywt(name))] for name in PYWT_PHOTOS})
    photos.update({name.removesuffix(".jpg"): [_rgb(_matplotlib(name))] for name in MATPLOTLIB_PHOTOS})
    return photos


def scenes() -> dict[str, tuple[str, list[np.ndarray]]]:
    """Scene name -> (source photograph, its images): every photograph gives two scenes, its halves."""
    out = {}
    for name, sources in photographs().items():
        cut = [_halves(source) for source in sources]
        out[f"{name}-a"] = (name, [c[0] for c in cut])
        out[f"{name}-b"] = (name, [c[1] for c in cut])
    return out


def view_pipeline(size: int, crop: tuple[float, float]) -> A.Compose:
    """A hard new photograph of a scene: crop (``crop``: share of the area), rotation up to 30 degrees,
    perspective, light and colour, greyscale, noise, JPEG at quality 20-60; longest side ``size``."""
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=crop, ratio=(0.75, 1.333), p=1.0),
        A.Affine(rotate=(-30, 30), border_mode=0, p=1.0),
        A.Perspective(scale=(0.02, 0.08), p=0.7),
        A.ColorJitter(brightness=0.4, contrast=0.3, saturation=0.4, hue=0.04, p=0.9),
        A.ToGray(p=0.25),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.5),
        A.ImageCompression(quality_range=(20, 60), p=1.0),
    ])


def photograph(source: np.ndarray, pipeline: A.Compose, rng: np.random.Generator) -> bytes:
    """One view of ``source`` through ``pipeline``, seeded by ``rng``; PNG, so the JPEG damage is kept as made."""
    pipeline.set_random_seed(int(rng.integers(2**31)))
    buffer = io.BytesIO()
    Image.fromarray(pipeline(image=source)["image"]).save(buffer, "PNG")
    return buffer.getvalue()


def generate(root: str | Path, spec: PhotoSet = PhotoSet()) -> dict:
    """Write the views under ``root``; returns the ground truth {"images": [...], "scene": [...] (None: a
    distractor), "source": [...] (the photograph a view comes from)}."""
    root = Path(root)
    truth_path = root / "truth.json"
    stamp = {"generator": GENERATOR, **spec.__dict__}
    if truth_path.is_file():
        truth = json.loads(truth_path.read_text())
        if truth.get("stamp") == stamp and all((root / f).is_file() for f in truth["images"]):
            return truth
    root.mkdir(parents=True, exist_ok=True)
    single_threaded_opencv()  # the views run OpenCV here; DataLoader workers are forked from this process later
    rng = np.random.default_rng([spec.seed, 13])
    hard, textures = view_pipeline(spec.image_size, (1 / 3, 1.0)), view_pipeline(spec.image_size, (0.05, 0.6))
    images, labels, sources = [], [], []
    for name, (source, photos) in scenes().items():
        for v in range(spec.views):
            images.append(_write(root, f"{name}-{v:02d}.png", photograph(photos[v % len(photos)], hard, rng)))
            labels.append(name)
            sources.append(source)
    texture_photos = [_rgb(_skimage(name)) for name in TEXTURES]
    for d in range(spec.distractors):
        data = photograph(texture_photos[d % len(texture_photos)], textures, rng)
        images.append(_write(root, f"texture-{d:03d}.png", data))
        labels.append(None)
        sources.append(TEXTURES[d % len(TEXTURES)])
    truth = {"stamp": stamp, "images": images, "scene": labels, "source": sources}
    with atomic_path(truth_path) as tmp:
        tmp.write_text(json.dumps(truth))
    return truth


def write_label_folders(root: str | Path, spec: PhotoSet = PhotoSet()) -> dict[str, int]:
    """The views as a folder of your own would be: ``root/scenes/<scene>/<view>.png`` and the textures in
    ``root/distractors/`` (hard links to ``root/views/``, or copies where links are refused). Returns the
    count of each."""
    import os
    import shutil

    root = Path(root)
    truth = generate(root / "views", spec)
    for name, scene in zip(truth["images"], truth["scene"]):
        target = root / ("scenes" if scene else "distractors") / (scene or "") / name
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(root / "views" / name, target)
        except OSError:
            shutil.copyfile(root / "views" / name, target)
    labelled = sum(scene is not None for scene in truth["scene"])
    return {"scenes": len(set(truth["scene"]) - {None}), "views": labelled,
            "distractors": len(truth["scene"]) - labelled}


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
