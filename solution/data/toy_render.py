"""The toy competition's renderer: procedural buildings (blocks with side walls, windows, roofs, domes,
spires and emblems) drawn once per landmark, then photographed under the difficulties REMAP targets:
viewpoint (perspective warps), scale (close-ups and partial crops), illumination and colour casts,
occluders, cluttered backgrounds, blur, noise and JPEG quality. A pure function of its seeds: one RNG per
image, so the result does not depend on the worker count. ``toy.py`` decides which images exist and writes
the competition's files.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

WALLS = [(205, 190, 160), (165, 80, 60), (228, 226, 215), (140, 140, 148), (195, 160, 110),
         (125, 100, 82), (212, 202, 172), (158, 170, 182), (190, 120, 90), (100, 110, 105)]
ROOFS = [(92, 60, 50), (60, 95, 75), (70, 72, 84), (150, 72, 50), (185, 150, 62), (50, 82, 125),
         (40, 40, 45), (120, 130, 140)]
GLASS = [(35, 40, 55), (60, 90, 120), (25, 25, 25), (90, 70, 50), (150, 170, 190)]
ASPECTS = [(4, 3), (3, 4), (1, 1), (3, 2), (2, 3)]
LAYER = 256  # side of the square RGBA layer a landmark is drawn on


def seeded_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _jitter(rng: np.random.Generator, color: tuple, amount: int = 18) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _shade(color: tuple, factor: float) -> tuple:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color[:3])


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------- landmark layer

def _windows(draw, rng, box, glass, shape, rows, cols, wall):
    x0, y0, x1, y1 = box
    cell_w, cell_h = (x1 - x0) / cols, (y1 - y0) / rows
    fill_w, fill_h = rng.uniform(0.35, 0.7), rng.uniform(0.4, 0.75)
    for r in range(rows):
        for c in range(cols):
            cx, cy = x0 + (c + 0.5) * cell_w, y0 + (r + 0.5) * cell_h
            w, h = cell_w * fill_w / 2, cell_h * fill_h / 2
            if shape == "rect":
                draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=glass)
            elif shape == "arch":
                r = min(w, h)
                draw.rectangle([cx - w, cy - h + r, cx + w, cy + h], fill=glass)
                draw.pieslice([cx - w, cy - h, cx + w, cy - h + 2 * r], 180, 360, fill=glass)
            elif shape == "round":
                draw.ellipse([cx - w, cy - w, cx + w, cy + w], fill=glass)
            else:  # framed
                draw.rectangle([cx - w - 1, cy - h - 1, cx + w + 1, cy + h + 1], fill=_shade(wall, 1.2))
                draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=glass)


def _roof(draw, rng, box, kind, color, depth):
    x0, y0, x1, _ = box
    w = x1 - x0
    if kind == "gable":
        draw.polygon([(x0 - 3, y0), (x1 + 3, y0), ((x0 + x1) / 2, y0 - w * rng.uniform(0.25, 0.6))], fill=color)
    elif kind == "dome":
        h = w * rng.uniform(0.35, 0.6)
        draw.pieslice([x0 + w * 0.1, y0 - h, x1 - w * 0.1, y0 + h], 180, 360, fill=color)
        draw.rectangle([(x0 + x1) / 2 - 2, y0 - h - 10, (x0 + x1) / 2 + 2, y0 - h + 2], fill=_shade(color, 0.6))
    elif kind == "spire":
        draw.polygon([(x0 + w * 0.2, y0), (x1 - w * 0.2, y0), ((x0 + x1) / 2, y0 - w * rng.uniform(1.0, 1.8))],
                     fill=color)
    elif kind == "stepped":
        for step in range(1, 3):
            inset = w * 0.15 * step
            draw.rectangle([x0 + inset, y0 - 9 * step, x1 - inset, y0 - 9 * (step - 1)],
                           fill=_shade(color, 1 - 0.1 * step))
    else:  # flat with cornice and a visible top face
        draw.polygon([(x0, y0), (x1, y0), (x1 + depth, y0 - depth / 2), (x0 + depth, y0 - depth / 2)],
                     fill=_shade(color, 1.1))
        draw.rectangle([x0 - 3, y0 - 2, x1 + 3, y0 + 3], fill=color)


def _emblem(draw, rng, cx, cy, r):
    kind = _pick(rng, ["clock", "rose", "star", "banner", "shield"])
    a, b = _pick(rng, GLASS + ROOFS), _jitter(rng, (235, 230, 215), 20)
    if kind == "clock":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=b, outline=a, width=2)
        draw.line([cx, cy, cx, cy - r * 0.8], fill=a, width=2)
        draw.line([cx, cy, cx + r * 0.6, cy], fill=a, width=2)
    elif kind == "rose":
        for k, frac in enumerate((1.0, 0.7, 0.4)):
            draw.ellipse([cx - r * frac, cy - r * frac, cx + r * frac, cy + r * frac], fill=(a, b)[k % 2])
    elif kind == "star":
        pts = [(cx + r * (1 if i % 2 == 0 else 0.45) * np.cos(np.pi * i / 5 - np.pi / 2),
                cy + r * (1 if i % 2 == 0 else 0.45) * np.sin(np.pi * i / 5 - np.pi / 2)) for i in range(10)]
        draw.polygon(pts, fill=a)
    elif kind == "banner":
        draw.rectangle([cx - r * 1.4, cy - r * 0.5, cx + r * 1.4, cy + r * 0.5], fill=a)
        draw.rectangle([cx - r * 1.2, cy - r * 0.2, cx + r * 1.2, cy + r * 0.2], fill=b)
    else:
        draw.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=a)
        draw.line([cx - r, cy - r, cx + r, cy + r], fill=b, width=3)


@lru_cache(maxsize=64)
def render_landmark(seed: int, number: int) -> Image.Image:
    """Landmark ``number`` of ``seed`` as an RGBA layer with a transparent surround."""
    rng = seeded_rng(seed, 1, number)
    layer = Image.new("RGBA", (LAYER, LAYER), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    base_y = LAYER - 6
    n_blocks = int(rng.integers(1, 4))
    total_w = rng.uniform(110, 190)  # at least 32 px per block keeps every window box non-empty
    widths = 32 + rng.dirichlet(np.ones(n_blocks) * 2.5) * (total_w - 32 * n_blocks)
    x = (LAYER - total_w) / 2 - 10
    side = int(rng.integers(8, 26))
    centre = int(np.argmax(widths)) if rng.random() < 0.7 else int(rng.integers(n_blocks))
    wall = _pick(rng, WALLS)
    glass, shape = _pick(rng, GLASS), _pick(rng, ["rect", "arch", "round", "framed"])
    for b, w in enumerate(widths):
        height = rng.uniform(60, 150) * (1.25 if b == centre else 1.0)
        box = (x, base_y - height, x + w, base_y)
        colour = _jitter(rng, wall, 12) if rng.random() < 0.7 else _jitter(rng, _pick(rng, WALLS))
        # The side wall recedes up and to the right; it is what makes the block read as 3-D.
        draw.polygon([(box[2], box[1]), (box[2] + side, box[1] - side / 2),
                      (box[2] + side, box[3] - side / 2), (box[2], box[3])], fill=_shade(colour, 0.62))
        draw.rectangle(box, fill=colour)
        rows, cols = int(rng.integers(2, 7)), max(1, int(w / rng.uniform(14, 30)))
        win_shape = shape if rng.random() < 0.7 else _pick(rng, ["rect", "arch", "round", "framed"])
        _windows(draw, rng, (box[0] + 4, box[1] + 6, box[2] - 4, box[3] - 22), glass, win_shape, rows, cols, colour)
        for r in range(rows):  # windows on the side wall, sheared with it
            yy = box[1] + 6 + (r + 0.5) * (height - 28) / rows
            draw.polygon([(box[2] + 3, yy - 4 - 1.5), (box[2] + side - 3, yy - 4 - side / 2 + 1.5),
                          (box[2] + side - 3, yy + 4 - side / 2 + 1.5), (box[2] + 3, yy + 4 - 1.5)],
                         fill=_shade(glass, 0.8))
        if rng.random() < 0.5:  # string courses
            for yy in np.linspace(box[1] + 4, box[3] - 20, int(rng.integers(2, 4))):
                draw.rectangle([box[0], yy, box[2], yy + 2], fill=_shade(colour, 0.8))
        roof = _pick(rng, ["gable", "dome", "spire", "stepped", "flat"])
        _roof(draw, rng, box, roof, _jitter(rng, _pick(rng, ROOFS), 10), side)
        if b == centre:
            door_w = min(w * 0.3, 24)
            cx = (box[0] + box[2]) / 2
            draw.rectangle([cx - door_w / 2, base_y - 20, cx + door_w / 2, base_y], fill=_shade(glass, 0.7))
            draw.pieslice([cx - door_w / 2, base_y - 20 - door_w / 2, cx + door_w / 2, base_y - 20 + door_w / 2],
                          180, 360, fill=_shade(glass, 0.7))
            if rng.random() < 0.8:
                _emblem(draw, rng, cx, box[1] + rng.uniform(0.15, 0.35) * height, rng.uniform(7, 15))
        x += w
    return _weathered(layer, rng)


def _weathered(layer: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Stone and render texture plus a light falling from one side: what flat fills lack against photographs.

    The grain is fixed per landmark (drawn from its own RNG), so it is part of what identifies it.
    """
    pixels = np.asarray(layer, np.float32)
    h, w = pixels.shape[:2]
    coarse = rng.normal(0, 1, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
    fine = rng.normal(0, 1, (h, w)).astype(np.float32)
    courses = np.sin(np.arange(h, dtype=np.float32)[:, None] * 2 * np.pi / rng.uniform(5, 9)) > 0.85  # mortar lines
    light = 1 + rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    factor = light * (1 + rng.uniform(0.04, 0.1) * coarse + rng.uniform(0.02, 0.06) * fine - 0.08 * courses)
    pixels[..., :3] = np.clip(pixels[..., :3] * factor[..., None], 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGBA")


# ----------------------------------------------------------------- scene and camera

def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """Coefficients for PIL's PERSPECTIVE transform mapping output ``dst`` corners to input ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(rows, float), src.reshape(-1)).tolist()


def _background(rng, size) -> Image.Image:
    w, h = size
    horizon = int(h * rng.uniform(0.55, 0.85))
    top = np.array(_pick(rng, [(110, 160, 220), (150, 170, 190), (230, 160, 110), (180, 190, 200), (70, 90, 140)]))
    bottom = np.clip(top + rng.integers(20, 70), 0, 255)
    t = np.linspace(0, 1, horizon)[:, None]
    sky = (top * (1 - t) + bottom * t)[:, None, :].repeat(w, axis=1)
    ground_colour = np.array(_pick(rng, [(95, 120, 70), (120, 118, 110), (150, 130, 100), (80, 80, 85)]))
    ground = ground_colour + rng.normal(0, 10, (h - horizon, w, 1))
    image = Image.fromarray(np.clip(np.concatenate([sky, ground]), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):  # clutter behind the landmark
        kind = rng.random()
        x = rng.uniform(-0.1, 1.0) * w
        if kind < 0.45:
            bw, bh = rng.uniform(0.08, 0.25) * w, rng.uniform(0.1, 0.4) * h
            colour = _jitter(rng, _pick(rng, WALLS), 30)
            draw.rectangle([x, horizon - bh, x + bw, horizon], fill=_shade(colour, rng.uniform(0.6, 0.95)))
            _windows(draw, rng, (x + 3, horizon - bh + 4, x + bw - 3, horizon - 4), _pick(rng, GLASS), "rect",
                     int(rng.integers(2, 6)), int(rng.integers(1, 5)), colour)
        elif kind < 0.8:
            r = rng.uniform(0.04, 0.1) * w
            base = horizon + rng.uniform(0, 0.1) * h
            draw.rectangle([x - r * 0.12, base - r * 1.8, x + r * 0.12, base], fill=(80, 60, 40))
            draw.ellipse([x - r, base - r * 3, x + r, base - r * 1.2], fill=_jitter(rng, (60, 110, 55), 25))
        else:
            y = rng.uniform(0.05, 0.4) * horizon
            r = rng.uniform(0.05, 0.12) * w
            draw.ellipse([x - r * 1.6, y - r * 0.5, x + r * 1.6, y + r * 0.5], fill=_jitter(rng, (240, 240, 245), 10))
    return image, horizon


def _occluders(draw, rng, size, horizon):
    w, h = size
    for _ in range(int(rng.choice([0, 0, 0, 1, 1, 2]))):
        kind = rng.random()
        x = rng.uniform(0, 1) * w
        base = rng.uniform(horizon, h + 0.1 * h)
        colour = tuple(int(c) for c in rng.integers(20, 230, 3))
        if kind < 0.3:  # person
            s = rng.uniform(0.15, 0.35) * h
            draw.ellipse([x - s * 0.18, base - s, x + s * 0.18, base - s * 0.1], fill=colour)
            draw.ellipse([x - s * 0.1, base - s * 1.2, x + s * 0.1, base - s * 0.98], fill=(200, 160, 130))
        elif kind < 0.55:  # car
            s = rng.uniform(0.15, 0.35) * w
            draw.rounded_rectangle([x - s, base - s * 0.45, x + s, base - s * 0.1], radius=s * 0.1, fill=colour)
            draw.rectangle([x - s * 0.5, base - s * 0.7, x + s * 0.4, base - s * 0.45], fill=_shade(colour, 0.7))
            for dx in (-0.6, 0.6):
                draw.ellipse([x + s * dx - s * 0.15, base - s * 0.25, x + s * dx + s * 0.15, base + s * 0.05],
                             fill=(20, 20, 20))
        elif kind < 0.8:  # tree in front
            r = rng.uniform(0.1, 0.22) * w
            draw.rectangle([x - r * 0.1, base - r * 2, x + r * 0.1, base], fill=(70, 50, 35))
            draw.ellipse([x - r, base - r * 3.4, x + r, base - r * 1.5], fill=_jitter(rng, (55, 105, 50), 25))
        else:  # pole with a sign
            draw.rectangle([x - 2, base - 0.7 * h, x + 2, base], fill=(60, 60, 60))
            draw.rectangle([x - 0.06 * w, base - 0.7 * h, x + 0.06 * w, base - 0.6 * h], fill=colour)


def _photometric(image: Image.Image, rng) -> Image.Image:
    if rng.random() < 0.1:  # dusk / night
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.3, 0.5))
        cast = np.array([0.8, 0.9, 1.25])
    else:
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.65, 1.35))
        cast = rng.uniform(0.82, 1.18, 3)
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.4))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.6)))
    pixels = np.asarray(image, np.float32) * cast + rng.normal(0, rng.uniform(0, 7), (image.height, image.width, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_view(seed: int, landmark: int | None, view_key: tuple, image_size: int) -> bytes:
    """One JPEG photograph of ``landmark`` (None: a scene without any landmark)."""
    rng = seeded_rng(seed, 2, *view_key)
    aw, ah = _pick(rng, ASPECTS)
    out_w, out_h = (image_size, round(image_size * ah / aw)) if aw >= ah else (round(image_size * aw / ah), image_size)
    margin = 1.35
    canvas_size = (int(out_w * margin), int(out_h * margin))
    scene, horizon = _background(rng, canvas_size)
    if landmark is not None:
        layer = render_landmark(seed, landmark)
        cw, ch = canvas_size
        height = rng.uniform(0.55, 1.05) * ch
        jitter = rng.uniform(0.02, 0.11)
        corners = np.array([[0, 0], [LAYER, 0], [LAYER, LAYER], [0, LAYER]], float)
        target = corners * height / LAYER
        target = target + rng.uniform(-jitter, jitter, (4, 2)) * height
        # Keep the base on the ground: shift so the lowest corner meets the horizon band.
        cx = rng.uniform(0.35, 0.65) * cw
        base = min(ch, horizon + rng.uniform(0.0, 0.15) * ch)
        target[:, 0] += cx - target[:, 0].mean()
        target[:, 1] += base - target[2:, 1].mean()
        warped = layer.transform(canvas_size, Image.PERSPECTIVE, _perspective_coeffs(corners, target),
                                 Image.BILINEAR)
        scene.paste(warped, (0, 0), warped)
    draw = ImageDraw.Draw(scene)
    _occluders(draw, rng, canvas_size, horizon)
    # Close-ups and partial crops: keep 65-100% of the area around a random centre.
    area = rng.uniform(0.65, 1.0) if landmark is not None else rng.uniform(0.6, 1.0)
    cw, ch = canvas_size
    crop_w, crop_h = cw / margin * np.sqrt(area) * margin ** 0.5, ch / margin * np.sqrt(area) * margin ** 0.5
    crop_w, crop_h = min(crop_w, cw), min(crop_h, ch)
    x0, y0 = rng.uniform(0, cw - crop_w), rng.uniform(0, ch - crop_h)
    scene = scene.crop((int(x0), int(y0), int(x0 + crop_w), int(y0 + crop_h))).resize((out_w, out_h), Image.BILINEAR)
    scene = _photometric(scene, rng)
    buffer = io.BytesIO()
    scene.save(buffer, "JPEG", quality=int(rng.integers(30, 96)))
    return buffer.getvalue()


# ----------------------------------------------------------------- the competition files

