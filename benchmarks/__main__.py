"""Run the benchmarks one after another, each in its own process, and summarise.

    python -m benchmarks                 # all of them (about half an hour on 2 cores)
    python -m benchmarks stream_throughput detection_quality
    python -m benchmarks --list

Each benchmark prints its own table (the figures the README quotes); this runner adds one
line per benchmark with its wall time and exit status. Benchmarks that need servers run them
on a stack of their own (``benchmarks/bench_stack.py``: ``.state/bench``, ports of its own),
so their events never reach the stack ``make demo`` uses.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

# Cheapest first, so a broken set-up shows early.
BENCHMARKS: dict[str, str] = {
    "image_properties": "image properties vs Deepchecks' property functions",
    "detection_quality": "false alarms and detection delay of the window and drift code",
    "eigencam": "EigenCAM cost per image against a plain predict",
    "stream_throughput": "stream worker events/s, freshness, window drift vs Deepchecks",
    "detector_publish": "detector service with publishing on and off; publish call time",
    "recommender": "recommender service with publishing on and off; training time",
    "batch_image_drift": "Deepchecks image drift of a window: from images vs stored properties",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, what in BENCHMARKS.items():
            print(f"{name:20s} {what}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    summary: list[tuple[str, float, int]] = []
    for i, name in enumerate(names, 1):
        print(f"\n=== [{i}/{len(names)}] benchmarks.{name}: {BENCHMARKS[name]}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        summary.append((name, time.monotonic() - t0, rc))
    print(f"\n| {'benchmark':20s} | {'wall s':>7s} | exit |")
    print(f"|{'-' * 22}|{'-' * 9}|------|")
    for name, seconds, rc in summary:
        print(f"| {name:20s} | {seconds:7.0f} | {rc:4d} |")
    return max((rc for _, _, rc in summary), default=0)


if __name__ == "__main__":
    sys.exit(main())
