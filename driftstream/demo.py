"""``make demo``: bring the stack up and push real events through it, then print a summary.

Exit status 0 only when every stage did what it claims.
"""

from __future__ import annotations

import sys
import time

from driftstream.cli import cmd_stack_status
from driftstream.settings import get_settings
from driftstream.stack import stack


def main() -> int:
    t0 = time.monotonic()
    settings = get_settings()
    print("== driftstream demo ==")
    print(f"state dir: {settings.abs_state_dir}")
    print("\n-- 1. stack up")
    stack.up(settings)

    print("\n-- 2. round trip: events -> Kafka -> validating consumer (+ dead letter) -> S3 -> read back")
    from driftstream import roundtrip

    rt = roundtrip.run(settings)
    print(f"sent {rt.sent}, consumed {rt.consumed}, dead-lettered {rt.dead_lettered} (1 broken on purpose), "
          f"archived to s3://{settings.s3_bucket}/{rt.archived_key}, read back {rt.read_back} in {rt.seconds:.1f}s")

    print("\n-- status")
    import argparse

    healthy = cmd_stack_status(argparse.Namespace(json=False, only=None)) == 0
    ok = rt.ok and healthy
    print(f"\ndemo {'OK' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s "
          f"(the stack keeps running: `driftstream stack down` stops it)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
