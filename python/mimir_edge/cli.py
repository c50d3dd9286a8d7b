"""The ``mimir-edge`` command.

Subcommands: ``scan`` decodes and counts remote-write bodies the way the edge charges them
(how an operator checks a captured push); ``demo`` does the same on built-in pushes and
replays a tenant over its limit; ``rls`` runs the Rate Limit Service; ``check-config``
validates a Mimir runtime config; ``overrides-sync`` keeps every RLS replica's limits in step
with Mimir's overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mimir_edge import DEFAULT_MAX_DECODED_BYTES, RemoteWriteError, scan_remote_write

_COLUMNS = (
    "series",
    "samples",
    "histograms",
    "exemplars",
    "metadata",
    "ingested",
    "label_pairs",
    "max_labels_per_series",
    "max_label_name_length",
    "max_label_value_length",
    "decoded_bytes",
)


def _scan(args: argparse.Namespace) -> int:
    failed = 0
    rows: list[dict[str, object]] = []
    for name in args.files:
        body = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        row: dict[str, object] = {"file": name, "compressed_bytes": len(body)}
        try:
            stats = scan_remote_write(
                body,
                content_encoding=args.content_encoding,
                content_type=args.content_type,
                max_decoded_bytes=args.max_decoded_bytes,
            )
        except RemoteWriteError as e:
            failed += 1
            row.update(error=str(e), reason=e.reason, http_status=e.http_status)
        else:
            row.update(stats.as_dict())
        rows.append(row)

    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_table(rows)
    return 1 if failed else 0


def _print_table(rows: list[dict[str, object]]) -> None:
    headers = ("file", "compressed_bytes", *_COLUMNS)
    table = [[str(r.get(h, "")) for h in headers] for r in rows if "error" not in r]
    widths = [max([len(h), *(len(t[i]) for t in table)]) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for t in table:
        print("  ".join(c.rjust(w) for c, w in zip(t, widths, strict=True)))
    for r in rows:
        if "error" in r:
            print(f"{r['file']}: {r['error']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir-edge",
        description="Per-tenant ingestion-limit enforcement at the edge of Grafana Mimir.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser(
        "scan",
        help="decode and count remote-write bodies",
        description="Decode and count remote-write bodies as the edge charges them. "
        "Exits 1 if any body is rejected (the reason is printed).",
    )
    scan.add_argument("files", nargs="+", help="body files (raw HTTP bodies); - for stdin")
    scan.add_argument(
        "--content-encoding",
        default="snappy",
        help="snappy (block format, what Prometheus sends) or identity (default: %(default)s)",
    )
    scan.add_argument(
        "--content-type",
        default=None,
        help="the request's Content-Type; "
        "application/x-protobuf;proto=io.prometheus.write.v2.Request selects remote write 2.0 "
        "(default: remote write 1.0)",
    )
    scan.add_argument(
        "--max-decoded-bytes",
        type=int,
        default=DEFAULT_MAX_DECODED_BYTES,
        help="refuse bodies that decode to more than this (default: %(default)s)",
    )
    scan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    scan.set_defaults(func=_scan)

    demo = sub.add_parser(
        "demo",
        help="count built-in pushes and replay a tenant over its limit (no files needed)",
        description="Encode remote write 1.0 and 2.0 pushes, count them as the edge charges "
        "them, and replay a tenant pushing at twice its limit through the token bucket.",
    )
    demo.set_defaults(func=lambda _args: _demo())

    rls = sub.add_parser(
        "rls",
        help="run the Rate Limit Service (Envoy ext_authz + ratelimit, admin, metrics)",
        description="Run the Rate Limit Service: N worker processes serving Envoy's ext_authz "
        "Check and ratelimit ShouldRateLimit on one gRPC port, sharing one tenant table, plus "
        "/metrics, /healthz, /readyz and the admin API on the HTTP port. Every flag can also be "
        "set in the environment as MIMIR_EDGE_<FLAG>.",
    )
    from mimir_edge.rls.settings import add_arguments

    add_arguments(rls)
    rls.set_defaults(func=_rls)

    from mimir_edge import check_config, loadgen, stack
    from mimir_edge.sync import cli as sync_cli

    check_config.add_parser(sub)
    sync_cli.add_parser(sub)
    stack.add_parser(sub)
    loadgen.add_parser(sub)
    return parser


def _rls(args: argparse.Namespace) -> int:
    from mimir_edge.rls import supervisor
    from mimir_edge.rls.settings import from_args

    return supervisor.run(from_args(args))


def _demo() -> int:
    from mimir_edge.demo import run  # the encoder is only needed here

    return run()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
