#!/usr/bin/env python3
"""Golden vectors for native/tests/envoy_wire.rs, built with the real Envoy stubs (xds-protos).

    . .venv/bin/activate
    python native/tests/gen_envoy_golden.py > native/tests/envoy_golden.rs

prints every request and response below as a Rust byte string. The Rust tests parse the
requests and check that the encoders in native/src/envoy.rs emit the responses byte for byte
(the logical contents of each response are repeated in envoy_wire.rs; keep the two in step).

    cd native && cargo test --test envoy_wire -- --ignored write_encoder_outputs
    python tests/gen_envoy_golden.py --verify target/envoy-golden

closes the loop the other way: it parses, with xds-protos, the bytes the Rust encoders wrote,
and checks each equals the message built here and re-serializes to the same bytes.

Serialization is deterministic (map entries sorted by key), so the output is stable.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys

import google.protobuf
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.internal import api_implementation
from google.rpc import status_pb2

AC = attribute_context_pb2.AttributeContext
RLR = rls_pb2.RateLimitResponse
Descriptor = ratelimit_pb2.RateLimitDescriptor

# ------------------------------------------------------------------------------------------
# Requests Envoy sends
# ------------------------------------------------------------------------------------------

# A few KB of incompressible binary, standing in for a snappy remote-write body.
BODY = random.Random(20260101).randbytes(3000)

HEADERS = {
    ":authority": "mimir.example.com",
    ":method": "POST",
    ":path": "/api/v1/push",
    ":scheme": "https",
    "accept-encoding": "gzip",
    "content-encoding": "snappy",
    "content-length": str(len(BODY)),
    "content-type": "application/x-protobuf",
    "user-agent": "Prometheus/3.1.0",
    "x-envoy-auth-partial-body": "false",
    "x-envoy-expected-rq-timeout-ms": "30000",
    "x-forwarded-for": "10.1.2.3",
    "x-forwarded-proto": "https",
    "x-prometheus-remote-write-version": "0.1.0",
    "x-request-id": "0d6c8e4e-3b1f-4f7e-9a55-3c2f1b9e7d10",
    "x-scope-orgid": "tenant-42",
}


def peer(ip: str, port: int, **kw) -> AC.Peer:
    addr = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )
    return AC.Peer(address=addr, **kw)


def check_request(http: AC.HttpRequest, **attrs) -> bytes:
    req = external_auth_pb2.CheckRequest(
        attributes=AC(
            source=peer("10.1.2.3", 53122, service="prometheus"),
            destination=peer("10.1.9.9", 8080, labels={"app": "mimir-edge"}),
            request=AC.Request(
                time=timestamp_pb2.Timestamp(seconds=1767225600, nanos=123456789),
                http=http,
            ),
            **attrs,
        )
    )
    return req.SerializeToString(deterministic=True)


def check_full() -> bytes:
    """What Envoy sends with with_request_body.pack_as_bytes: true."""
    meta = base_pb2.Metadata(
        filter_metadata={
            "envoy.filters.http.jwt_authn": struct_pb2.Struct(
                fields={"sub": struct_pb2.Value(string_value="tenant-42")}
            )
        }
    )
    return check_request(
        AC.HttpRequest(
            id="13897214501943201734",
            method="POST",
            headers=HEADERS,
            path="/api/v1/push",
            host="mimir.example.com",
            scheme="https",
            size=len(BODY),
            protocol="HTTP/2",
            raw_body=BODY,
        ),
        context_extensions={"route": "push"},
        metadata_context=meta,
        route_metadata_context=meta,
        tls_session=AC.TLSSession(sni="mimir.example.com"),
    )


RAW_HEADERS = [
    (":method", "POST"),
    (":path", "/api/v1/push"),
    ("content-type", "application/x-protobuf"),
    ("content-encoding", "snappy"),
    ("x-forwarded-for", "10.0.0.1"),
    ("x-forwarded-for", "10.0.0.2"),
    ("x-binary", b"\xff\xfe\x00tail"),
    ("x-scope-orgid", "tenant-7"),
    ("x-envoy-auth-partial-body", "true"),
]


def check_header_map() -> bytes:
    """encode_raw_headers: true — each header its own HeaderValue with raw_value, duplicates
    kept; one old-style `value` entry mixed in."""
    headers = [
        base_pb2.HeaderValue(
            key=k, raw_value=v if isinstance(v, bytes) else v.encode()
        )
        for k, v in RAW_HEADERS
    ]
    headers.append(base_pb2.HeaderValue(key="x-legacy", value="plain"))
    return check_request(
        AC.HttpRequest(
            method="POST",
            path="/api/v1/push",
            size=1024,
            header_map=base_pb2.HeaderMap(headers=headers),
            raw_body=BODY[:1024],
        )
    )


STRING_BODY = '{"tenant": "tenant-9", "note": "caf\u00e9 \u2014 ok"}'


def check_string_body() -> bytes:
    """pack_as_bytes: false — the body as a string."""
    return check_request(
        AC.HttpRequest(
            method="PUT",
            path="/otlp/v1/metrics?x=1",
            headers={
                "x-scope-orgid": "tenant-9",
                "content-type": "application/json",
                "x-envoy-auth-partial-body": "true",
            },
            size=len(STRING_BODY.encode()),
            body=STRING_BODY,
        )
    )


def check_no_body() -> bytes:
    """No with_request_body: no body, no partial-body header, size 0 (so absent)."""
    return check_request(
        AC.HttpRequest(
            method="POST",
            path="/api/v1/push",
            headers={"x-scope-orgid": "tenant-1", "content-length": "77"},
        )
    )


def check_split() -> bytes:
    """Two CheckRequests concatenated: protobuf merges them into one."""
    a = external_auth_pb2.CheckRequest(
        attributes=AC(
            request=AC.Request(
                http=AC.HttpRequest(
                    method="GET", path="/first", headers={"x-scope-orgid": "tenant-a"}
                )
            )
        )
    )
    b = external_auth_pb2.CheckRequest(
        attributes=AC(
            request=AC.Request(
                http=AC.HttpRequest(
                    method="POST",
                    headers={"content-type": "application/x-protobuf"},
                    raw_body=b"\x00\x01\x02",
                )
            )
        )
    )
    data = a.SerializeToString(deterministic=True) + b.SerializeToString(
        deterministic=True
    )
    merged = external_auth_pb2.CheckRequest.FromString(data).attributes.request.http
    assert merged.method == "POST" and merged.path == "/first"
    assert dict(merged.headers) == {
        "x-scope-orgid": "tenant-a",
        "content-type": "application/x-protobuf",
    }
    assert merged.raw_body == b"\x00\x01\x02"
    return data


def rls_full() -> bytes:
    req = rls_pb2.RateLimitRequest(
        domain="mimir-edge",
        descriptors=[
            Descriptor(
                entries=[
                    Descriptor.Entry(key="tenant", value="tenant-42"),
                    Descriptor.Entry(key="kind", value="samples"),
                ],
                hits_addend=wrappers_pb2.UInt64Value(value=1234),
            ),
            Descriptor(
                entries=[
                    Descriptor.Entry(key="tenant", value="tenant-42"),
                    Descriptor.Entry(key="kind", value="requests"),
                ]
            ),
            Descriptor(
                entries=[
                    Descriptor.Entry(key="tenant", value="tenant-42"),
                    Descriptor.Entry(key="kind", value="bytes"),
                ],
                limit=Descriptor.RateLimitOverride(requests_per_unit=10_000_000, unit=1),
                hits_addend=wrappers_pb2.UInt64Value(value=0),  # set, but 0
            ),
        ],
        hits_addend=1,
    )
    return req.SerializeToString(deterministic=True)


def rls_minimal() -> bytes:
    req = rls_pb2.RateLimitRequest(
        domain="d", descriptors=[Descriptor(entries=[Descriptor.Entry(key="k", value="v")])]
    )
    return req.SerializeToString(deterministic=True)


REQUESTS = {
    "CHECK_FULL": (check_full, "A realistic Envoy CheckRequest: 16 headers, peers, metadata, 3000-byte raw_body."),
    "CHECK_HEADER_MAP": (check_header_map, "encode_raw_headers: header_map with raw_value (a duplicate, a non-UTF-8 value) and one `value`."),
    "CHECK_STRING_BODY": (check_string_body, "pack_as_bytes: false: the body in `body` (string)."),
    "CHECK_NO_BODY": (check_no_body, "No with_request_body: no body, no size."),
    "CHECK_SPLIT": (check_split, "Two CheckRequests concatenated, which protobuf merges."),
    "RLS_FULL": (rls_full, "RateLimitRequest: 3 descriptors, hits_addend at both levels, a limit override."),
    "RLS_MINIMAL": (rls_minimal, "RateLimitRequest: one descriptor, nothing optional."),
}

# ------------------------------------------------------------------------------------------
# Responses the RLS sends (the Rust encoders must produce exactly these bytes)
# ------------------------------------------------------------------------------------------


def hvo(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


def ok(*headers: tuple[str, str]) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(headers=[hvo(*h) for h in headers]),
    )


def denied(
    code: int, message: str, http: int, headers: list[tuple[str, str]], body: str
) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http),
            headers=[hvo(*h) for h in headers],
            body=body,
        ),
    )


TOO_LARGE_BODY = (
    "the request body is 12582912 bytes after decompression, more than the 10485760 bytes "
    "allowed for tenant tenant-42 (-distributor.max-recv-msg-size); split the push into "
    "smaller batches"
)


def status(code, rpu=0, unit=0, name="", remaining=0, reset_ns=0) -> RLR.DescriptorStatus:
    s = RLR.DescriptorStatus(code=code, limit_remaining=remaining)
    if rpu or unit or name:
        s.current_limit.CopyFrom(RLR.RateLimit(requests_per_unit=rpu, unit=unit, name=name))
    if reset_ns:
        s.duration_until_reset.CopyFrom(
            duration_pb2.Duration(seconds=reset_ns // 10**9, nanos=reset_ns % 10**9)
        )
    return s


def rls(overall, statuses, headers=()) -> RLR:
    return RLR(
        overall_code=overall,
        statuses=statuses,
        response_headers_to_add=[base_pb2.HeaderValue(key=k, value=v) for k, v in headers],
    )


OK, OVER = RLR.OK, RLR.OVER_LIMIT
SECOND, MINUTE, WEEK = RLR.RateLimit.SECOND, RLR.RateLimit.MINUTE, RLR.RateLimit.WEEK

RESPONSES = {
    "CHECK_OK_EMPTY": ok(),
    "CHECK_OK_TWO_HEADERS": ok(("x-mimir-edge-tenant", "tenant-42"), ("x-mimir-edge-samples", "1234")),
    "CHECK_DENIED_429": denied(
        8,
        "ingestion rate limit exceeded",
        429,
        [("retry-after", "7"), ("content-type", "text/plain; charset=utf-8")],
        "ingestion rate limit (100000 samples/s) exceeded for tenant tenant-42\n",
    ),
    "CHECK_DENIED_400": denied(
        3,
        "malformed remote write body",
        400,
        [("content-type", "text/plain; charset=utf-8")],
        "malformed protobuf at byte 17: varint runs past the end of its message (truncated)\n",
    ),
    "CHECK_DENIED_401": denied(16, "", 401, [], ""),
    "CHECK_DENIED_413": denied(
        8, "body too large", 413, [("content-type", "text/plain")], TOO_LARGE_BODY
    ),
    "CHECK_DENIED_415": denied(
        3,
        "unsupported content encoding",
        415,
        [("content-type", "text/plain"), ("accept-encoding", "snappy")],
        'unsupported content encoding: "zstd"\n',
    ),
    "RLS_OK_BARE": rls(OK, []),
    "RLS_OK": rls(
        OK,
        [
            status(OK, 100_000, SECOND, "tenant_samples", 98_766, 250_000_000),
            status(OK),
            status(OK, 10_000_000, MINUTE, "", 9_999_000, 59 * 10**9 + 1),
        ],
    ),
    "RLS_OVER_LIMIT": rls(
        OVER,
        [
            status(OVER, 100_000, SECOND, "tenant_samples", 0, 750_000_000),
            status(OK, 4_294_967_295, WEEK, "tenant_requests", 4_294_967_295, 3600 * 10**9 + 123),
            status(OVER, 0, SECOND, "", 0, 0),
        ],
        [
            ("x-ratelimit-limit", "100000, 100000;w=1"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1"),
            ("retry-after", "1"),
        ],
    ),
}

# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def rust_bytes(name: str, data: bytes, doc: str) -> str:
    """A `pub const NAME: &[u8]` byte string; printable ASCII stays readable."""
    tokens = []
    for b in data:
        if 0x20 <= b <= 0x7E and b not in (0x22, 0x5C):
            tokens.append(chr(b))
        else:
            tokens.append(f"\\x{b:02x}")
    lines, cur = [], ""
    for t in tokens:
        if len(cur) + len(t) > 92:
            lines.append(cur)
            cur = ""
        if not cur and t == " ":
            t = "\\x20"  # a line continuation eats leading whitespace
        cur += t
    lines.append(cur)
    body = "\\\n".join(lines)
    return f'/// {doc} ({len(data)} bytes)\npub const {name}: &[u8] = b"\\\n{body}";\n'


def generate() -> str:
    out = [
        "//! Generated by native/tests/gen_envoy_golden.py from xds-protos (protobuf "
        f"{google.protobuf.__version__}, {api_implementation.Type()} backend). Do not edit:\n"
        "//! rerun the script. Requests are what Envoy sends; responses are what the encoders\n"
        "//! in src/envoy.rs must emit byte for byte.\n\n"
        "#![allow(dead_code)]\n\n",
        "// Requests\n\n",
    ]
    for name, (build, doc) in REQUESTS.items():
        out.append(rust_bytes(name, build(), doc))
        out.append("\n")
    out.append(rust_bytes("CHECK_FULL_BODY", BODY, "The raw_body of CHECK_FULL"))
    out.append("\n// Responses\n\n")
    for name, msg in RESPONSES.items():
        text = " ".join(str(msg).split())
        out.append(rust_bytes(name, msg.SerializeToString(), f"`{text}`"))
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


def verify(directory: pathlib.Path) -> int:
    """Parse the encoder outputs the Rust side wrote (NAME.bin) with xds-protos."""
    failures = 0
    for name, want in RESPONSES.items():
        path = directory / f"{name}.bin"
        data = path.read_bytes()
        got = type(want)()
        got.ParseFromString(data)
        problems = []
        if got != want:
            problems.append(f"parsed {got} != expected {want}")
        if got.SerializeToString() != data:
            problems.append("re-serializes to different bytes")
        if got.FindInitializationErrors():
            problems.append("uninitialized fields")
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        print(f"{name}: {len(data)} bytes, {status}")
        failures += bool(problems)
    print(f"{len(RESPONSES) - failures}/{len(RESPONSES)} encoder outputs match xds-protos")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verify", type=pathlib.Path, metavar="DIR",
                    help="check the NAME.bin files the Rust encoders wrote to DIR")
    args = ap.parse_args()
    if args.verify:
        return verify(args.verify)
    sys.stdout.write(generate())
    return 0


if __name__ == "__main__":
    sys.exit(main())
