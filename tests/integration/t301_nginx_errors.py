#!/usr/bin/env python3
"""t301: the errors nginx produces itself (before a location is chosen, or in one) answer with
the API's JSON error body and their real status on every listener: the API's HTTP and HTTPS
listeners and the apps' listeners. Raw sockets, so that malformed request lines really reach
nginx as written: an encoded ../ above the root, a bad request line, an unknown method form,
a bad Host, a bare LF, a too long URI (414), too large headers (431), a bad HTTP version
(505), an unknown Transfer-Encoding (501), a body over the limit (413). Before the fix these
hit `error_page 400 @e400`, which fails ("empty URI in redirect to named location") with an
HTML 500."""
import json
import os
import re
import socket
import ssl
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from cmtest import ERROR_KEYS, HTTPS_URL, URL, RFC3339, run  # noqa: E402

APPS_URL = os.environ.get("CM_APPS_URL", "")
APPS_HTTPS_URL = os.environ.get("CM_APPS_HTTPS_URL", "")


def raw(base, data, timeout=10):
    """Sends data as is; returns (status, headers dict lowercased, body bytes)."""
    u = urllib.parse.urlsplit(base)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(s, server_hostname=u.hostname)
    try:
        s.sendall(data)
        buf = b""
        while True:
            try:
                c = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not c:
                break
            buf += c
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3})", lines[0] if lines else "")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return (int(m.group(1)) if m else None), hdrs, body


def check(t, base, label, data, status, code=None):
    st, h, body = raw(base, data)
    try:
        b = json.loads(body.decode("utf-8"))
    except Exception:
        b = None
    problems = []
    if st != status:
        problems.append("status %r != %d" % (st, status))
    if not (h.get("content-type", "").startswith("application/json")):
        problems.append("Content-Type %r" % h.get("content-type"))
    if not isinstance(b, dict):
        problems.append("body is not JSON")
    else:
        if set(ERROR_KEYS) - set(b):
            problems.append("missing keys %s" % sorted(set(ERROR_KEYS) - set(b)))
        if b.get("status") != status:
            problems.append("body.status %r" % b.get("status"))
        if code and b.get("code") != code:
            problems.append("code %r != %s" % (b.get("code"), code))
        if not RFC3339.match(str(b.get("timestamp"))):
            problems.append("timestamp %r" % b.get("timestamp"))
        if not h.get("x-request-id") or h.get("x-request-id") != b.get("request_id"):
            problems.append("X-Request-Id %r vs request_id %r" % (h.get("x-request-id"), b.get("request_id")))
    t.ok(not problems, "%s: %s -> %d JSON%s" % (base, label, status, " " + code if code else ""),
         {"problems": problems, "status": st, "headers": h, "body": body[:400].decode("latin-1")})


def main(t):
    host = "127.0.0.1"
    cases = [
        ("GET /containers/..%2F..%2Fetc%2Fpasswd", b"GET /containers/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: " +
         host.encode() + b"\r\nConnection: close\r\n\r\n", 400, "BAD_REQUEST"),
        ("GET /../../etc/passwd", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
         400, "BAD_REQUEST"),
        ("POST with an encoded ../ above the root", b"POST /%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2"
         b"\r\nConnection: close\r\n\r\n{}", 400, "BAD_REQUEST"),
        ("a request line of garbage", b"GARBAGE\x01 / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "BAD_REQUEST"),
        ("a space in the URI", b"GET /a b c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "BAD_REQUEST"),
        ("a malformed Host", b"GET / HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n", 400, "BAD_REQUEST"),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "BAD_REQUEST"),
        ("a NUL in a header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n",
         400, "BAD_REQUEST"),
        ("HTTP/3.0 on a 1.1 listener", b"GET / HTTP/3.0\r\nHost: x\r\nConnection: close\r\n\r\n", 505,
         "HTTP_VERSION_NOT_SUPPORTED"),
        ("an unknown Transfer-Encoding", b"POST /containers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
         b"Connection: close\r\n\r\n", 501, "NOT_IMPLEMENTED"),
        ("a URI over the header buffers (414)", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
         414, "URI_TOO_LONG"),
        ("a header over the header buffers (431)", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 +
         b"\r\nConnection: close\r\n\r\n", 431, "HEADERS_TOO_LARGE"),
        ("a body over the limit (413)", b"POST /containers HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
         b"Content-Type: application/json\r\nConnection: close\r\n\r\n", 413, "BODY_TOO_LARGE"),
    ]
    bases = [URL, HTTPS_URL] + [b for b in (APPS_URL, APPS_HTTPS_URL) if b]
    for base in bases:
        for label, data, status, code in cases:
            check(t, base, label, data, status, code)


run(main)
