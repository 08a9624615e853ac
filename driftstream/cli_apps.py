"""Sub-commands of the pipeline's stages (services, workers, traffic, references, reports)."""

from __future__ import annotations

import argparse

from driftstream.settings import get_settings


def cmd_stream_worker(args: argparse.Namespace) -> int:
    from stream_apps.worker import run

    run(args.app, get_settings(), loglevel=args.loglevel)
    return 0


def cmd_alerts_receiver(args: argparse.Namespace) -> int:
    from driftstream.alerts_receiver import serve
    from driftstream.stack.app_components import alerts_record_path

    s = get_settings()
    serve(s.host, s.alerts_receiver_port, alerts_record_path(s))
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    import json

    from driftstream.alerts_receiver import read_alerts
    from driftstream.stack.app_components import alerts_record_path

    for a in read_alerts(alerts_record_path(get_settings())):
        print(json.dumps(a) if args.json else f"{a.get('received_at')}  {a.get('path'):8s} {a.get('status'):9s} "
              f"{a.get('alertname')}  {a.get('labels', {}).get('service', '')}")
    return 0


def cmd_reference_build(args: argparse.Namespace) -> int:
    from batch.reference_build import build_reference, describe

    print(describe(build_reference(get_settings(), args.model)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "detector":
        from serving.detector_service import serve
    else:
        from serving.recommender_service import serve
    serve(get_settings())
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    if args.model == "detector":
        from producers.traffic_detector import main
    else:
        from producers.traffic_recommender import main
    return int(main(args.args) or 0)


def cmd_batch_worker(args: argparse.Namespace) -> int:
    from batch.worker import run_worker
    from serving.json_logging import configure_json_logging

    configure_json_logging("batch")
    run_worker(get_settings())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from batch.report_runner import parse_since, report

    if (args.window is None) == (args.since is None):
        raise SystemExit("give exactly one of --window W and --since DURATION")
    results = report(get_settings(), args.model, window=args.window,
                     since=parse_since(args.since) if args.since else None)
    for r in results:
        print(json.dumps(r, default=str))
    return 0 if all(r.get("status") == "ok" for r in results) else 1


def cmd_report_list(args: argparse.Namespace) -> int:
    import json

    from batch.report_runner import list_reports

    rows = list_reports(get_settings(), model=args.model)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        print(f"{r['model']:12s} {r['window']:18s} events={r.get('event_count', '-')!s:6s} "
              f"drift={r.get('drift_status', '-')!s:10s} reports={len(r.get('reports', {}))}")
    return 0


def cmd_report_serve(args: argparse.Namespace) -> int:
    from batch.report_server import make_server
    from driftstream.object_store import ObjectStore

    s = get_settings()
    server = make_server(ObjectStore(s), s.host, args.port)
    print(f"report index at http://{s.host}:{args.port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _report_dispatch(args: argparse.Namespace) -> int:
    if args.model == "list":
        args.model = None
        return cmd_report_list(args)
    if args.model == "serve":
        return cmd_report_serve(args)
    if args.model not in ("detector", "recommender"):
        raise SystemExit(f"unknown report target {args.model!r}: detector, recommender, list or serve")
    return cmd_report(args)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the stage commands to the ``driftstream`` parser."""
    stream_p = sub.add_parser("stream", help="stream processors (Faust)")
    stream_sub = stream_p.add_subparsers(dest="stream_command", required=True)
    w = stream_sub.add_parser("worker", help="run one app's worker (state restored from changelogs)")
    w.add_argument("app", choices=["detector", "recommender"])
    w.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    w.set_defaults(func=cmd_stream_worker)

    serve_p = sub.add_parser("serve", help="run a BentoML service in the foreground")
    serve_p.add_argument("service", choices=["detector", "recommender"])
    serve_p.set_defaults(func=cmd_serve)

    traffic_p = sub.add_parser("traffic", help="send generated traffic (optionally drifted) to a service",
                               description="Options after MODEL go to the generator; see "
                                           "`driftstream traffic detector --help`.")
    traffic_p.add_argument("model", choices=["detector", "recommender"])
    traffic_p.add_argument("args", nargs=argparse.REMAINDER)
    traffic_p.set_defaults(func=cmd_traffic)

    batch_p = sub.add_parser("batch", help="batch worker: window archive + report jobs")
    batch_sub = batch_p.add_subparsers(dest="batch_command", required=True)
    batch_sub.add_parser("worker", help="archive closed windows to S3 and run their jobs").set_defaults(
        func=cmd_batch_worker)

    rep_p = sub.add_parser("report", help="batch reports: run on demand, list, serve the index")
    rep_p.add_argument("model", help="detector | recommender | list | serve")
    rep_p.add_argument("--window", help="window label (20261203T171500Z), ISO time or epoch seconds")
    rep_p.add_argument("--since", help="every archived window in the last 30m / 1h / 2d")
    rep_p.add_argument("--json", action="store_true", help="(list) one JSON list")
    rep_p.add_argument("--port", type=int, default=15080, help="(serve) port of the local index server")
    rep_p.set_defaults(func=_report_dispatch)

    ref_p = sub.add_parser("reference", help="training references for drift")
    ref_sub = ref_p.add_subparsers(dest="reference_command", required=True)
    rb = ref_sub.add_parser("build", help="compute the reference profile and store it in S3 (current version)")
    rb.add_argument("model", choices=["detector", "recommender"])
    rb.set_defaults(func=cmd_reference_build)

    alerts_p = sub.add_parser("alerts", help="alert notifications")
    alerts_sub = alerts_p.add_subparsers(dest="alerts_command", required=True)
    alerts_sub.add_parser("receiver", help="record Alertmanager webhooks (pager and email routes)").set_defaults(
        func=cmd_alerts_receiver)
    al = alerts_sub.add_parser("list", help="alerts the local receiver recorded")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_alerts_list)
