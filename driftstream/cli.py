"""The ``driftstream`` command line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable

from driftstream.settings import get_settings
from driftstream.stack.process import StackError

Handler = Callable[[argparse.Namespace], int]


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


# --- stack ------------------------------------------------------------------------------


def cmd_stack_up(args: argparse.Namespace) -> int:
    from driftstream.stack import stack

    stack.up(get_settings(), args.only)
    return cmd_stack_status(argparse.Namespace(json=False, only=args.only))


def cmd_stack_down(args: argparse.Namespace) -> int:
    from driftstream.stack import stack

    stack.down(get_settings(), args.only)
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    from driftstream.stack import stack

    st = stack.status(get_settings(), args.only)
    if args.json:
        print(json.dumps({name: s.as_dict() for name, s in st.items()}, indent=2))
    else:
        _print_table([[n, "yes" if s.healthy else "NO", s.endpoint, str(s.pid or "-")] for n, s in st.items()],
                     ["component", "healthy", "endpoint", "pid"])
    return 0 if all(s.healthy for s in st.values()) else 1


def cmd_stack_logs(args: argparse.Namespace) -> int:
    from driftstream.stack import stack

    comp = stack.select(get_settings(), [args.component])[0]
    if not comp.log_file.exists():
        print(f"no log yet for {args.component} ({comp.log_file})", file=sys.stderr)
        return 1
    cmd = ["tail", "-n", str(args.lines)] + (["-F"] if args.follow else []) + [str(comp.log_file)]
    return subprocess.call(cmd)


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftstream", description="Streaming drift monitoring for ML services.")
    sub = p.add_subparsers(dest="command", required=True)

    stack_p = sub.add_parser("stack", help="the local stack (Kafka, S3, Prometheus, Alertmanager, services)")
    stack_sub = stack_p.add_subparsers(dest="stack_command", required=True)
    for name, fn, help_ in [
        ("up", cmd_stack_up, "start every component (idempotent)"),
        ("down", cmd_stack_down, "stop what `up` started"),
        ("status", cmd_stack_status, "health, endpoint and pid of each component"),
    ]:
        sp = stack_sub.add_parser(name, help=help_)
        sp.add_argument("--only", type=lambda v: v.split(","), default=None, help="comma-separated components")
        if name == "status":
            sp.add_argument("--json", action="store_true", help="one JSON object keyed by component")
        sp.set_defaults(func=fn)
    logs_p = stack_sub.add_parser("logs", help="show (and follow) a component's log")
    logs_p.add_argument("component")
    logs_p.add_argument("-f", "--follow", action="store_true")
    logs_p.add_argument("-n", "--lines", type=int, default=50)
    logs_p.set_defaults(func=cmd_stack_logs)

    from driftstream import cli_apps

    cli_apps.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
