"""Synthetic ID-card scenes with YOLO labels, in the spirit of MIDV-500.

Each scene is a photograph-like image of zero or more identity cards lying on a varied
background (gradients, textures, wood, tiles, clutter such as paper sheets). A card has a
coloured header band, a portrait region and text lines; it is placed with a random scale,
rotation and perspective, then the whole scene gets uneven lighting, a colour cast, blur and
sensor noise. The label of a card is the axis-aligned box of its visible pixels.

Every scene is a pure function of its seed, so a data set is reproducible from
``(seed, split, index)`` alone: scenes can be generated in any order or in parallel.

>>> scene = generate_scene(7, size=(320, 240), n_cards=1)
>>> scene.image.shape, scene.image.dtype.name, scene.boxes.shape
((240, 320, 3), 'uint8', (1, 4))
>>> np.array_equal(scene.image, generate_scene(7, size=(320, 240), n_cards=1).image)
True
>>> scene.yolo_labels().startswith("0 ")
True

Command: ``python -m producers.idcard_scenes --out DIR --train N --val M --seed S`` writes
``DIR/images/{train,val}``, ``DIR/labels/{train,val}`` and ``DIR/data.yaml``.

Reference: V. V. Arlazarov et al., "MIDV-500: a dataset for identity document analysis and
recognition on mobile devices in video stream", Computer Optics 43(5), 2019.
"""

from __future__ import annotations

import argparse
import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CATEGORY = "id_card"
#: (width, height) of the generated frames; several shapes so aspect ratio and area vary.
FRAME_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (480, 640), (640, 640), (720, 480), (512, 384))
#: Probabilities of 0, 1, 2 and 3 cards in a scene.
CARD_COUNT_P: tuple[float, ...] = (0.12, 0.66, 0.17, 0.05)
CARD_ASPECT = 85.6 / 54.0  # ISO/IEC 7810 ID-1
SPLITS = ("train", "val")
_MIN_VISIBLE_FRACTION = 0.6
_PLACEMENT_ATTEMPTS = 30
_TITLES = ("IDENTITY CARD", "NATIONAL ID", "RESIDENCE PERMIT", "ID CARD", "CARTE D'IDENTITE")


@dataclass(frozen=True)
class Scene:
    """An RGB frame and the boxes (x1, y1, x2, y2 in pixels, float) of the cards in it."""

    image: np.ndarray
    boxes: np.ndarray

    def yolo_labels(self) -> str:
        """YOLO label text: one ``0 cx cy w h`` line per card, coordinates relative to the frame."""
        h, w = self.image.shape[:2]
        lines = []
        for x1, y1, x2, y2 in self.boxes:
            cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            lines.append(f"0 {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        return "".join(line + "\n" for line in lines)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene ``index`` in ``split``; independent across splits and indices."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's bundled font: nothing is read from the system or downloaded.
    try:
        return ImageFont.load_default(size=max(6, size))
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(c) for c in rgb)


def _random_text(rng: np.random.Generator, n_min: int, n_max: int, alphabet: str) -> str:
    n = int(rng.integers(n_min, n_max + 1))
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))


def _portrait(rng: np.random.Generator, pw: int, ph: int) -> Image.Image:
    photo = Image.new("RGB", (pw, ph), _random_colour(rng, (0.0, 0.25), (0.7, 0.95)))
    draw = ImageDraw.Draw(photo)
    skin = _random_colour(rng, (0.2, 0.6), (0.35, 0.95))
    clothes = _random_colour(rng, (0.2, 0.9), (0.15, 0.8))
    hair = _random_colour(rng, (0.1, 0.7), (0.05, 0.6))
    cx = pw * rng.uniform(0.42, 0.58)
    head_w, head_h = pw * rng.uniform(0.42, 0.56), ph * rng.uniform(0.38, 0.48)
    head_top = ph * rng.uniform(0.12, 0.22)
    draw.ellipse((-pw * 0.1, ph * 0.7, pw * 1.1, ph * 1.5), fill=clothes)
    hair_box = (cx - head_w * 0.55, head_top - ph * 0.05, cx + head_w * 0.55, head_top + head_h * 0.6)
    draw.ellipse(hair_box, fill=hair)
    draw.ellipse((cx - head_w / 2, head_top, cx + head_w / 2, head_top + head_h), fill=skin)
    eye_y, r = head_top + head_h * 0.45, max(1.0, pw * 0.025)
    for ex in (cx - head_w * 0.2, cx + head_w * 0.2):
        draw.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), fill=(30, 30, 30))
    return photo


def render_card(rng: np.random.Generator, width: int = 428) -> np.ndarray:
    """An RGBA card of ``width`` x ``width / 1.585`` pixels with rounded (transparent) corners."""
    if width < 32:
        raise ValueError(f"width must be >= 32 pixels, got {width}")
    height = int(round(width / CARD_ASPECT))
    base = _random_colour(rng, (0.02, 0.35), (0.8, 1.0))
    card = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(card)
    # Security-print waves in a slightly darker tone of the base colour.
    wave = tuple(max(0, c - int(rng.integers(12, 40))) for c in base)
    xs = np.arange(0, width, 2, dtype=np.float64)
    period, amp = width / rng.uniform(2, 6), height * rng.uniform(0.02, 0.06)
    for y0 in np.arange(rng.uniform(0, 12), height, rng.uniform(8, 16)):
        ys = y0 + amp * np.sin(xs / period * 2 * np.pi + y0 / 7.0)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=wave, width=1)

    header_h = int(height * rng.uniform(0.16, 0.24))
    header = _random_colour(rng, (0.5, 1.0), (0.3, 0.85))
    draw.rectangle((0, 0, width, header_h), fill=header)
    title = str(rng.choice(_TITLES))
    draw.text((width * 0.04, header_h * 0.22), title, fill=(255, 255, 255), font=_font(int(header_h * 0.55)))

    portrait_left = rng.random() < 0.8
    pw, ph = int(width * rng.uniform(0.24, 0.3)), int(height * rng.uniform(0.52, 0.62))
    px = int(width * 0.04) if portrait_left else int(width * 0.96) - pw
    py = header_h + int((height - header_h - ph) * rng.uniform(0.25, 0.6))
    card.paste(_portrait(rng, pw, ph), (px, py))

    text_x0 = px + pw + width * 0.04 if portrait_left else width * 0.05
    text_x1 = width * 0.96 if portrait_left else px - width * 0.03
    n_lines = int(rng.integers(4, 7))
    line_h = (height * 0.8 - header_h) / n_lines
    ink = _random_colour(rng, (0.0, 0.6), (0.05, 0.35))
    label_ink = tuple(min(255, c + 90) for c in ink)
    small, big = _font(int(line_h * 0.38)), _font(int(line_h * 0.55))
    for i in range(n_lines):
        y = header_h + height * 0.05 + i * line_h
        draw.text((text_x0, y), _random_text(rng, 3, 9, string.ascii_uppercase), fill=label_ink, font=small)
        value = _random_text(rng, 4, 16, string.ascii_uppercase + string.digits + "  ")
        draw.text((text_x0, y + line_h * 0.36), value, fill=ink, font=big)
    # Signature-like stroke or machine-readable zone at the bottom.
    if rng.random() < 0.5:
        mrz = _random_text(rng, 20, 30, string.ascii_uppercase + string.digits + "<<<<")
        draw.text((width * 0.04, height * 0.86), mrz, fill=ink, font=_font(int(height * 0.07)))
    else:
        t = np.linspace(0, 1, 40)
        sx = text_x0 + (text_x1 - text_x0) * (0.1 + 0.6 * t)
        sy = height * 0.9 + height * 0.03 * np.sin(t * rng.uniform(8, 20))
        draw.line(list(zip(sx.tolist(), sy.tolist(), strict=True)), fill=ink, width=max(1, width // 200))

    alpha = Image.new("L", (width, height), 0)
    ImageDraw.Draw(alpha).rounded_rectangle(
        (0, 0, width - 1, height - 1), radius=int(width * rng.uniform(0.03, 0.05)), fill=255
    )
    return np.dstack([np.asarray(card), np.asarray(alpha)])


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Values in [0, 1] that vary smoothly over about ``cells`` cells across the frame."""
    small = rng.random((max(2, cells * h // max(w, h)), max(2, cells * w // max(w, h)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    c1 = np.array(_random_colour(rng, (0.0, 0.8), (0.15, 0.95)), np.float32)
    c2 = np.array(_random_colour(rng, (0.0, 0.8), (0.15, 0.95)), np.float32)
    # Broadcast coordinates: a row and a column instead of two full grids.
    xx, yy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    kind = int(rng.integers(0, 5))
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))
        t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
    elif kind == 1:  # fabric or stone
        t = 0.6 * _smooth_noise(rng, w, h, int(rng.integers(4, 12))) + 0.4 * _smooth_noise(rng, w, h, 60)
    elif kind == 2:  # wood grain
        angle = rng.uniform(0, np.pi)
        u = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle)) + 25 * _smooth_noise(rng, w, h, 5)
        t = 0.5 + 0.5 * np.sin(u / rng.uniform(4, 14))
    elif kind == 3:  # tiles
        cell = rng.uniform(24, 120)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
        t = 0.3 + 0.4 * t + 0.3 * _smooth_noise(rng, w, h, 30)
    else:  # plain surface
        t = 0.15 * _smooth_noise(rng, w, h, 3)
    img = c1 + t[..., None] * (c2 - c1)
    return _draw_clutter(rng, img.clip(0, 255).astype(np.uint8))


def _draw_clutter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Hard negatives: paper sheets, plain cards, discs and pen strokes without ID features."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 5))):
        colour = _random_colour(rng, (0.0, 0.9), (0.2, 1.0))
        kind = rng.random()
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if kind < 0.45:  # rotated rectangle (paper, book, plain card)
            rw, rh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
            theta = rng.uniform(0, np.pi)
            corners = np.array([[-rw, -rh], [rw, -rh], [rw, rh], [-rw, rh]]) / 2
            rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
            pts = corners @ rot.T + [cx, cy]
            draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
            if rng.random() < 0.5:  # printed lines on the sheet
                for k in range(int(rng.integers(2, 8))):
                    a = pts[0] + (pts[3] - pts[0]) * (0.15 + 0.1 * k)
                    b = a + (pts[1] - pts[0]) * rng.uniform(0.3, 0.9)
                    draw.line([tuple(a), tuple(b)], fill=(40, 40, 40), width=1)
        elif kind < 0.75:
            r = rng.uniform(0.03, 0.15) * min(w, h)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            ex, ey = cx + rng.uniform(-0.3, 0.3) * w, cy + rng.uniform(-0.3, 0.3) * h
            draw.line((cx, cy, ex, ey), fill=colour, width=int(rng.integers(2, 8)))
    return np.asarray(pil).copy()


def _card_corners(rng: np.random.Generator, w: int, h: int, card_w: float) -> np.ndarray:
    card_h = card_w / CARD_ASPECT
    corners = np.array([[-card_w, -card_h], [card_w, -card_h], [card_w, card_h], [-card_w, card_h]]) / 2
    # Mostly upright, as a phone camera sees a card; sometimes turned around.
    angle = rng.normal(0, 0.35)
    if rng.random() < 0.15:
        angle += rng.choice([np.pi / 2, np.pi, -np.pi / 2])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = corners @ rot.T
    corners += rng.uniform(-1, 1, (4, 2)) * card_w * rng.uniform(0, 0.12)  # perspective
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    # Mostly inside the frame; now and then a card is cut by the frame edge.
    overflow = (hi - lo) * (rng.uniform(0.05, 0.3) if rng.random() < 0.2 else 0.0)
    low, high = -lo - overflow, np.array([w, h]) - hi + overflow
    centre = np.where(low < high, rng.uniform(0, 1, 2) * (high - low) + low, np.array([w, h]) / 2)
    return (corners + centre).astype(np.float32)


def _light_and_camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    xx, yy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    # Light fields are sums and products of a row and a column, so they cost one pass.
    ramp = ((xx - w / 2) * np.float32(np.cos(angle)) + (yy - h / 2) * np.float32(np.sin(angle))) / max(w, h)
    light = np.float32(rng.uniform(0.6, 1.3)) * (1 + np.float32(rng.uniform(-0.6, 0.6)) * ramp)
    if rng.random() < 0.25:  # glare
        gx, gy, gs = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * max(w, h)
        glare_x = np.exp(-((xx - gx) ** 2) / (2 * gs * gs))
        glare_y = np.exp(-((yy - gy) ** 2) / (2 * gs * gs))
        light = light + np.float32(rng.uniform(0.2, 0.6)) * glare_x * glare_y
    out *= light[..., None]
    out *= rng.uniform(0.88, 1.12, 3).astype(np.float32)  # colour temperature
    if rng.random() < 0.45:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.5, 2.0))
    sigma = np.float32(rng.uniform(0, 10))
    out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
    np.clip(out, 0, 255, out=out)
    return np.rint(out, out=out).astype(np.uint8)


def generate_scene(
    seed: int | np.random.Generator,
    size: tuple[int, int] | None = None,
    n_cards: int | None = None,
) -> Scene:
    """One scene. ``size`` is (width, height), drawn from FRAME_SIZES when None; ``n_cards``
    is drawn from CARD_COUNT_P when None. Overlapping placements are retried, so a crowded
    scene can hold fewer cards than asked for."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    w, h = size if size is not None else FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    if w < 64 or h < 64:
        raise ValueError(f"size must be at least 64x64, got {w}x{h}")
    if n_cards is None:
        n_cards = int(rng.choice(len(CARD_COUNT_P), p=CARD_COUNT_P))
    if not 0 <= n_cards <= 6:
        raise ValueError(f"n_cards must be in [0, 6], got {n_cards}")

    img = _background(rng, w, h).astype(np.float32)
    occupied = np.zeros((h, w), np.uint8)
    boxes: list[list[float]] = []
    for _ in range(n_cards):
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            card_w = rng.uniform(0.18, 0.7 if n_cards == 1 else 0.45) * min(w, h) * CARD_ASPECT
            dst = _card_corners(rng, w, h, card_w)
            box = _place_card(rng, img, occupied, dst, card_w)
            if box is not None:
                boxes.append(box)
                break
    image = _light_and_camera(rng, img.clip(0, 255).astype(np.uint8))
    return Scene(image=image, boxes=np.array(boxes, np.float64).reshape(-1, 4))


def _place_card(
    rng: np.random.Generator, img: np.ndarray, occupied: np.ndarray, dst: np.ndarray, card_w: float
) -> list[float] | None:
    """Paint a card with corners ``dst`` into ``img`` (in place) and return its box, or None when
    too little of it is in the frame or it touches a card already there."""
    h, w = occupied.shape
    pad = 3  # room for the dilation that keeps cards apart
    x0, y0 = np.maximum(np.floor(dst.min(axis=0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(dst.max(axis=0)).astype(int) + pad, [w, h])
    if x1 - x0 < 2 * pad + 4 or y1 - y0 < 2 * pad + 4:
        return None
    # Decide on the polygon first: rendering and warping a card costs far more.
    local = dst - np.array([x0, y0], np.float32)
    polygon = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(polygon, np.round(local * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    if polygon.sum() < _MIN_VISIBLE_FRACTION * cv2.contourArea(dst):
        return None
    if (polygon & occupied[y0:y1, x0:x1]).any():
        return None
    card = render_card(rng, int(max(64, min(card_w, 640))))
    ch, cw = card.shape[:2]
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    warp = cv2.getPerspectiveTransform(src, local)
    warped = cv2.warpPerspective(card, warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = warped[..., 3:].astype(np.float32) / 255.0
    visible = alpha[..., 0] > 0.5
    if not visible.any():
        return None
    roi = img[y0:y1, x0:x1]
    roi += (warped[..., :3].astype(np.float32) - roi) * alpha
    occupied[y0:y1, x0:x1] |= cv2.dilate(visible.astype(np.uint8), np.ones((5, 5), np.uint8))
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    return [float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1)]


def write_dataset(out: Path, n_train: int, n_val: int, seed: int, quality: int = 92) -> Path:
    """Write a YOLO data set under ``out`` and return the path of its ``data.yaml``.

    Train and val scenes come from independent streams of ``seed``; a held-out set is the
    same call with another seed.
    """
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    out = Path(out).resolve()
    for split, n in zip(SPLITS, (n_train, n_val), strict=True):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scene = generate_scene(scene_rng(seed, split, i))
            stem = f"scene_{seed}_{split}_{i:05d}"
            Image.fromarray(scene.image).save(out / "images" / split / f"{stem}.jpg", quality=quality)
            (out / "labels" / split / f"{stem}.txt").write_text(scene.yolo_labels())
    data_yaml = out / "data.yaml"
    data_yaml.write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n  0: {CATEGORY}\n")
    return data_yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic ID-card data set in YOLO format.")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--train", type=int, default=400, help="number of training scenes")
    parser.add_argument("--val", type=int, default=100, help="number of validation scenes")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    args = parser.parse_args(argv)
    data_yaml = write_dataset(args.out, args.train, args.val, args.seed)
    print(f"wrote {args.train} train and {args.val} val scenes; data: {data_yaml}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
