"""Seconds for the detector drift report of one window: from images vs from stored properties.

The window holds ``--window`` images (2,000 by default) darkened to 60 % (the chapter's
listing 11.5), the reference ``--reference`` training-like images. To keep set-up short, the
images are variants (random crop, flip, small gain) of a few hundred generated ID-card scenes;
the archive keeps them as JPEG. Rows:

- ``images``: decode the JPEGs of both sets, then ``image_drift_report`` (Deepchecks computes
  the seven properties on every pixel, runs ImagePropertyDrift, writes HTML and JSON);
- ``stored properties``: ``image_drift_report_from_properties`` on the property tables the
  stream already computed (same check, same report);
- for comparison, ImagePropertyDrift with its default 10,000-pixel sampled properties.

The scores of the first two rows must be equal; the last column shows how far the sampled
default is from them. Run: ``.venv/bin/python benchmarks/batch_image_drift.py [--window 2000]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch.image_drift_report import (  # noqa: E402
    decode_image,
    image_drift_report,
    image_drift_report_from_properties,
)
from driftstream.offline_env import apply_offline_env  # noqa: E402
from driftstream.settings import get_settings  # noqa: E402
from producers.idcard_scenes import generate_scene  # noqa: E402
from producers.image_properties import DEEPCHECKS_NAMES, PROPERTY_NAMES, compute_properties_batch  # noqa: E402
from producers.image_transforms import brightness  # noqa: E402


def variants(bases: list[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` images, each a random crop (70-100 % per side), maybe mirrored, with a gain of 0.9-1.1."""
    out = []
    for k in range(n):
        base = bases[k % len(bases)]
        h, w = base.shape[:2]
        ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = base[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain = rng.uniform(0.9, 1.1)
        out.append(np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return out


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def sampled_default_scores(reference: list[np.ndarray], window: list[np.ndarray]) -> dict[str, float]:
    """ImagePropertyDrift exactly as in listing 11.6 (default, sampled properties)."""
    from deepchecks.vision import BatchOutputFormat, VisionData
    from deepchecks.vision.checks import ImagePropertyDrift

    def data(images: list[np.ndarray]) -> VisionData:
        batches = [BatchOutputFormat(images=images[s : s + 64]) for s in range(0, len(images), 64)]
        return VisionData(batches, task_type="other", reshuffle_data=False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = ImagePropertyDrift().run(data(reference), data(window), with_display=False).value
    snake = dict(zip(DEEPCHECKS_NAMES, PROPERTY_NAMES, strict=True))
    return {snake[name]: entry["Drift score"] for name, entry in value.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--reference", type=int, default=500)
    parser.add_argument(
        "--scenes", type=int, default=160, help="distinct generated scenes behind the variants"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.window, args.reference) < 10 or args.scenes < 2:
        raise SystemExit("--window and --reference must be >= 10, --scenes >= 2")
    apply_offline_env(get_settings().abs_state_dir)
    logging.getLogger("deepchecks").setLevel(logging.WARNING)
    rng = np.random.default_rng(args.seed)

    start = time.perf_counter()
    half = args.scenes // 2
    ref_bases = [generate_scene(args.seed * 100_000 + i).image for i in range(half)]
    win_bases = [brightness(generate_scene(args.seed * 100_000 + half + i).image, 0.6) for i in range(half)]
    ref_jpeg = [jpeg(im) for im in variants(ref_bases, args.reference, rng)]
    win_jpeg = [jpeg(im) for im in variants(win_bases, args.window, rng)]
    setup_s = time.perf_counter() - start
    print(f"set-up: {args.scenes} scenes, {args.reference} + {args.window} JPEGs in {setup_s:.0f} s")

    # What the stream did already, once per image at inference time (not part of the batch job).
    t0 = time.perf_counter()
    ref_images = [decode_image(b) for b in ref_jpeg]
    win_images = [decode_image(b) for b in win_jpeg]
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_props = pd.DataFrame(compute_properties_batch(ref_images))
    win_props = pd.DataFrame(compute_properties_batch(win_images))
    stream_ms = (time.perf_counter() - t0) * 1e3 / (args.reference + args.window)

    import deepchecks.vision.checks  # noqa: F401  (import once, outside the timings)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fast = image_drift_report_from_properties(ref_props, win_props, Path(tmp) / "properties")
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded_ref = [decode_image(b) for b in ref_jpeg]
        decoded_win = [decode_image(b) for b in win_jpeg]
        slow = image_drift_report(decoded_ref, decoded_win, Path(tmp) / "images")
        slow_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sampled = sampled_default_scores(ref_images, win_images)
    sampled_s = time.perf_counter() - t0

    n = args.reference + args.window
    print(
        f"window {args.window} images, reference {args.reference}; JPEG decode of both: {decode_s:.1f} s; "
        f"properties in the stream: {stream_ms:.1f} ms/image"
    )
    print(f"{'path':<40} {'seconds':>8} {'ms/image':>9} {'x faster':>9}")
    for label, secs in [
        ("images (decode + Deepchecks properties)", slow_s),
        ("stored properties", fast_s),
        ("sampled default, no report files", sampled_s),
    ]:
        print(f"{label:<40} {secs:>8.1f} {secs * 1e3 / n:>9.2f} {slow_s / secs:>9.1f}")
    print(f"\n{'property':<30} {'images':>8} {'stored':>8} {'sampled':>8}")
    a, b = slow.metrics["scores"], fast.metrics["scores"]
    for name in PROPERTY_NAMES:
        print(f"{name:<30} {a[name]:>8.4f} {b[name]:>8.4f} {sampled[name]:>8.4f}")
    worst = max(abs(sampled[k] - a[k]) for k in PROPERTY_NAMES)
    print(f"scores equal: {a == b}; largest |sampled - exact| = {worst:.4f}")
    return 0 if a == b else 1


if __name__ == "__main__":
    raise SystemExit(main())
