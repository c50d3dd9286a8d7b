"""Write (or check) the committed Envoy bootstraps for a loopback setup.

Every file here is rendered by ``mimir_edge.envoy_config`` (the one source of Envoy
configuration); never edit the JSON by hand. Usage::

    python servers/envoy/generate.py          # rewrite the files
    python servers/envoy/generate.py --check  # exit 1 if a file differs from its rendering

The loopback plan (one host, every component on 127.0.0.1):

=================================  =====================================================
NGINX (servers/nginx)              127.0.0.1:8000 (listen.conf)
Envoy                              127.0.0.1:10000, admin 127.0.0.1:9901
RLS (``mimir-edge rls``)           gRPC 127.0.0.1:8081, HTTP 127.0.0.1:9090 (its defaults)
Mimir distributor                  127.0.0.1:8080 (Mimir's default HTTP port)
=================================  =====================================================
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from mimir_edge.envoy_config import EnvoyConfig, dump

HERE = Path(__file__).resolve().parent

#: Canary and edge phases: allowed pushes go on to the distributor.
_FULL = EnvoyConfig(
    upstream_host="127.0.0.1",
    upstream_port=8080,
    rls_host="127.0.0.1",
    rls_port=8081,
    listen_address="127.0.0.1",
    listen_port=10000,
    admin_address="127.0.0.1",
    admin_port=9901,
)

#: File name -> the configuration it is rendered from.
BOOTSTRAPS: dict[str, EnvoyConfig] = {
    "envoy.json": _FULL,
    # Mirror phase: Envoy judges NGINX's copies (servers/nginx/mirror.conf marks them with
    # X-Mimir-Edge-Mirror) and answers the ones it allows with 204 itself: none reaches the
    # distributor, which has the original. Pushes without the mark, and other paths, are
    # forwarded as with envoy.json.
    "envoy-mirror.json": replace(_FULL, mirror_mode=True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name, cfg in BOOTSTRAPS.items():
        path = HERE / name
        text = dump(cfg)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run `python servers/envoy/generate.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
