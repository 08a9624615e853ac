"""Draw detections on an image: a box per detection and a ``category confidence`` label above it.

Colours follow the confidence (red below 0.5, amber below 0.75, green above), so a
rendered batch shows at a glance where the model hesitates. The font is Pillow's built-in
one, so nothing is downloaded or looked up on the system.

>>> from PIL import Image
>>> img = Image.new("RGB", (120, 80), "white")
>>> out = draw_detections(img, [{"bbox": [10, 20, 90, 70], "category": "id_card", "confidence": 0.9}])
>>> out.size, out.getpixel((10, 45)), img.getpixel((10, 45))
((120, 80), (46, 204, 64), (255, 255, 255))
>>> to_png(out)[:8]
b'\\x89PNG\\r\\n\\x1a\\n'

Reference: Pillow ImageDraw (https://pillow.readthedocs.io/en/stable/reference/ImageDraw.html).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont

_LOW, _MID, _HIGH = (255, 65, 54), (255, 165, 0), (46, 204, 64)


def confidence_colour(confidence: float) -> tuple[int, int, int]:
    """
    >>> confidence_colour(0.3), confidence_colour(0.6), confidence_colour(0.95)
    ((255, 65, 54), (255, 165, 0), (46, 204, 64))
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    return _LOW if confidence < 0.5 else _MID if confidence < 0.75 else _HIGH


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_detections(image: Image.Image, detections: Sequence[Mapping[str, Any]]) -> Image.Image:
    """A copy of ``image`` (as RGB) with every detection's box and label drawn."""
    out = image.convert("RGB")  # always a copy, even for RGB input
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 200))
    font = _font(max(10, round(min(out.size) / 32)))
    for det in detections:
        x1, y1, x2, y2 = (float(v) for v in det["bbox"])
        if x2 < x1 or y2 < y1:
            raise ValueError(f"bbox must satisfy x1<=x2 and y1<=y2, got {det['bbox']}")
        confidence = float(det["confidence"])
        colour = confidence_colour(confidence)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        label = f"{det['category']} {confidence:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y1 + width  # inside the box at the top edge
        draw.rectangle((x1, ty, x1 + tw + 2 * width, ty + th + 2 * width), fill=colour)
        draw.text((x1 + width - left, ty + width - top), label, fill=(0, 0, 0), font=font)
    return out


def to_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # speed over size: this is a debugging view
    return buf.getvalue()
