"""Microseconds per 640x640 RGB image: producers.image_properties vs deepchecks' functions.

Compares ``compute_properties`` with

- deepchecks' seven property functions, each called on the image (what ImagePropertyDrift
  runs when given the default property list explicitly), and
- ``calc_default_image_properties`` (its default fast path: 10,000 sampled pixels).

Run: ``.venv/bin/python benchmarks/image_properties.py [--repeats 20]``. Reports the median.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.idcard_scenes import generate_scene  # noqa: E402
from producers.image_properties import compute_properties  # noqa: E402


def _deepchecks_properties() -> ModuleType:
    # Loaded by file: the deepchecks package import is slow and deepchecks.vision needs extras.
    spec = importlib.util.find_spec("deepchecks")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("deepchecks is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "vision" / "utils" / "image_properties.py"
    module_spec = importlib.util.spec_from_file_location("deepchecks_image_properties", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _median_us(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    dp = _deepchecks_properties()
    images = {
        "uniform noise": np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8),
        "id-card scene": generate_scene(1, size=(640, 640)).image,
    }
    rows = []
    for label, image in images.items():
        ours = _median_us(lambda im=image: compute_properties(im), args.repeats)
        functions = _median_us(
            lambda im=image: [p["method"]([im]) for p in dp.default_image_properties], max(3, args.repeats // 4)
        )
        sampled = _median_us(lambda im=image: dp.calc_default_image_properties([im]), args.repeats)
        rows.append((label, ours, functions, sampled))

    print(f"{'image (640x640)':<16} {'ours us':>10} {'deepchecks fns us':>18} {'ratio':>7} "
          f"{'dc sampled us':>14} {'ratio':>7}")
    for label, ours, functions, sampled in rows:
        print(f"{label:<16} {ours:>10.0f} {functions:>18.0f} {functions / ours:>7.1f} "
              f"{sampled:>14.0f} {sampled / ours:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
