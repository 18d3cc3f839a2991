#!/usr/bin/env python3
"""t300: cross-site requests, cross-site WebSocket hijacking, DNS rebinding and app origins,
sent with the headers a browser would send (no browser needed). Every refused request must
leave nothing behind: the database (containers, jobs, apps) and `docker ps -a` unchanged, no
exec in the target container.

Refused:
  - a JSON body sent as text/plain, form-urlencoded or without a Content-Type -> 415
    UNSUPPORTED_MEDIA_TYPE (POST /containers, PATCH /containers/{cuid});
  - cross-site POST /containers (text/plain, as an HTML form sends it), multipart cross-site
    to /images/build and POST /apps, Origin: null, Sec-Fetch-Site: cross-site without an
    Origin, a foreign Origin on POST /start_container and GET /shutdown -> 403
    CROSS_ORIGIN_REFUSED;
  - WebSocket upgrades with a foreign Origin (terminal and logs) -> 403, no exec started;
  - a rebinding Host (the API, a WebSocket upgrade, harpoon's endpoint, the apps listener)
    -> 421 MISDIRECTED_REQUEST;
  - an app's origin (APPS_LISTEN) calling the API, reads included -> 403.
Allowed: no Origin (curl), the request's own origin, the other API listener's origin, an
origin of ALLOWED_ORIGINS (the run sets https://console.cm-test.example), loopback names and
ALLOWED_HOSTS (cm.cm-test.example) as Host, an empty-body action without a Content-Type, and
a WebSocket upgrade from the service's own origin.
"""
import base64
import json
import os
import re
import socket
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from cmtest import (IMAGE, SLEEP_CMD, URL, HTTPS_URL, api, check_error, db_query, docker_inspect,  # noqa: E402
                    ours_managed, rand_suffix, run, must_create, destroy, wait_docker)

APPS_URL = os.environ.get("CM_APPS_URL", "")
PORT = urllib.parse.urlsplit(URL).port
HTTPS_PORT = urllib.parse.urlsplit(HTTPS_URL).port
EVIL = "https://evil.example"
LISTED = "https://console.cm-test.example"
CROSS = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}


def state():
    """What a refused request must not change."""
    return {
        "containers": sorted(r["cuid"] for r in db_query("SELECT cuid FROM containers")),
        "jobs": db_query("SELECT count(*) AS n FROM jobs")[0]["n"],
        "apps": db_query("SELECT count(*) AS n FROM apps")[0]["n"],
        "docker": sorted(ours_managed()),
    }


def raw(data, port=PORT, timeout=15):
    """Sends a raw request to 127.0.0.1:port; returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(65536)
            if not c:
                break
            buf += c
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.1 (\d{3})", lines[0])
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(hdrs.get("content-length", "0") or 0)
        while len(body) < n:
            c = s.recv(65536)
            if not c:
                break
            body += c
        return (int(m.group(1)) if m else None), hdrs, body
    finally:
        s.close()


def ws_upgrade(path, origin=None, host=None, port=PORT):
    auth = base64.b64encode(("%s:%s" % (os.environ["CM_USER"], os.environ["CM_PASS"])).encode()).decode()
    h = ["GET %s HTTP/1.1" % path, "Host: %s" % (host or "127.0.0.1:%d" % port), "Upgrade: websocket",
         "Connection: Upgrade", "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
         "Sec-WebSocket-Version: 13", "Authorization: Basic " + auth]
    if origin:
        h.append("Origin: " + origin)
    return raw(("\r\n".join(h) + "\r\n\r\n").encode(), port=port)


def error_code(body):
    try:
        return json.loads(body.decode()).get("code")
    except Exception:
        return None


def exec_ids(cuid):
    return list((docker_inspect(cuid) or {}).get("ExecIDs") or [])


def curl_h2(path, headers, method="GET", data=None):
    """A request over HTTP/2 to the TLS listener (Host becomes :authority); (status, version, body)."""
    cmd = ["curl", "-sk", "--http2", "-X", method, "-u", "%s:%s" % (os.environ["CM_USER"], os.environ["CM_PASS"]),
           "-o", "-", "-w", "\n%{http_code} %{http_version}"]
    for k, v in headers.items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", data]
    out = subprocess.run(cmd + [HTTPS_URL + path], stdout=subprocess.PIPE, timeout=60).stdout.decode("utf-8", "replace")
    body, _, tail = out.rpartition("\n")
    st, _, ver = tail.partition(" ")
    return int(st or 0), ver, body


def main(t):
    s = api()
    spec = {"image": IMAGE, "command": SLEEP_CMD}
    cuid = must_create(s, t, "a container to aim at", **spec)["cuid"]
    t.status(s.post("/containers/%s/start" % cuid), 200, "start it (no body, no Content-Type)")
    before = state()
    execs = exec_ids(cuid)
    body = json.dumps(spec)

    # ---- Content-Type: 415 (no Origin at all: the media type alone)
    for ct in ("text/plain", "application/x-www-form-urlencoded", None, "application/json-patch+json",
               "application/json; boundary=x"):
        hdr = {"Content-Type": ct} if ct else {}
        r = s.post("/containers", data=body.encode(), headers=hdr)
        if ct is None:  # requests sends no Content-Type for bytes
            t.ok("Content-Type" not in r.request.headers, "the no-Content-Type case really sends none")
        check_error(t, r, 415, code="UNSUPPORTED_MEDIA_TYPE", name="POST /containers as %s" % ct)
    r = s.patch("/containers/" + cuid, data=json.dumps({"tags": ["x"]}).encode(), headers={"Content-Type": "text/plain"})
    check_error(t, r, 415, code="UNSUPPORTED_MEDIA_TYPE", name="PATCH /containers/{cuid} as text/plain")
    t.eq(state(), before, "nothing created or changed by the 415s")

    # ---- cross-site requests: 403
    r = s.post("/containers", data=body.encode(), headers={**CROSS, "Content-Type": "text/plain"})
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site text/plain POST /containers (an HTML form)")
    r = s.post("/containers", data=body.encode(), headers={**CROSS, "Content-Type": "application/json"})
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="POST /containers with a foreign Origin")
    r = s.post("/containers", data=body.encode(), headers={"Origin": "null", "Content-Type": "application/json"})
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="POST /containers with Origin: null")
    r = s.post("/containers", data=body.encode(), headers={"Sec-Fetch-Site": "cross-site",
                                                           "Content-Type": "application/json"})
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="POST /containers: Sec-Fetch-Site cross-site, no Origin")
    r = s.post("/containers/%s/stop" % cuid, headers=CROSS)
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site POST /containers/{cuid}/stop")
    r = s.delete("/containers/" + cuid, headers=CROSS)
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site DELETE /containers/{cuid}")
    tag = "cm-t300-%s:x" % rand_suffix()
    ctx = b"FROM %s\nRUN touch /pwned\n" % IMAGE.encode()
    import io
    import tarfile
    tb = io.BytesIO()
    with tarfile.open(fileobj=tb, mode="w") as tf:
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(ctx)
        tf.addfile(ti, io.BytesIO(ctx))
    r = s.post("/images/build", params={"tag": tag}, files={"context": ("c.tar", tb.getvalue(), "application/x-tar")},
               headers=CROSS)
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site multipart POST /images/build")
    r = s.post("/apps", files={"spec": (None, json.dumps({"name": "t300x", "src": "image:" + IMAGE})),
                               "source": ("s.zip", b"PK\x05\x06" + b"\0" * 18, "application/zip")}, headers=CROSS)
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site multipart POST /apps")
    r = s.post("/start_container", json={"image": "any"}, headers=CROSS)
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site POST /start_container (harpoon)")
    r = s.get("/shutdown", headers=CROSS)
    check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="cross-site GET /shutdown (a GET that stops the service)")
    t.eq(state(), before, "nothing created by the cross-site requests (DB, docker ps -a)")
    t.eq(s.get("/images/" + tag).status_code, 404, "no image was built by the cross-site build")
    info = wait_docker(cuid, lambda i: (i or {}).get("State", {}).get("Running"))
    t.ok(info and info["State"]["Running"], "the target container still runs", (info or {}).get("State"))

    # ---- WebSocket upgrades with a foreign Origin: terminal and logs
    for path in ("/ws/%s?command=id" % cuid, "/ws/%s/logs" % cuid):
        st, h, b = ws_upgrade(path, origin=EVIL)
        t.ok(st == 403 and error_code(b) == "CROSS_ORIGIN_REFUSED" and h.get("content-type", "").startswith(
            "application/json"), "WebSocket upgrade of %s with a foreign Origin -> 403 CROSS_ORIGIN_REFUSED" % path,
            {"status": st, "body": b[:300].decode("latin-1")})
    t.eq(exec_ids(cuid), execs, "no exec was started in the container by the refused upgrades")

    # ---- DNS rebinding: a Host of the attacker's name
    evil_host = "rebind.evil.example:%d" % PORT
    st, h, b = raw(b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % evil_host.encode())
    t.ok(st == 421 and error_code(b) == "MISDIRECTED_REQUEST", "GET /healthz with a rebinding Host -> 421",
         {"status": st, "body": b[:300].decode("latin-1")})
    r = s.post("/containers", json=spec, headers={"Host": evil_host})
    check_error(t, r, 421, code="MISDIRECTED_REQUEST", name="POST /containers with a rebinding Host")
    r = s.get("/containers", headers={"Host": evil_host})
    check_error(t, r, 421, code="MISDIRECTED_REQUEST", name="GET /containers with a rebinding Host")
    st, h, b = ws_upgrade("/ws/%s?command=id" % cuid, host=evil_host)
    t.ok(st == 421 and error_code(b) == "MISDIRECTED_REQUEST", "WebSocket upgrade with a rebinding Host -> 421",
         {"status": st, "body": b[:300].decode("latin-1")})
    r = s.post("/start_container", json={"image": "any"}, headers={"Host": evil_host})
    check_error(t, r, 421, code="MISDIRECTED_REQUEST", name="POST /start_container with a rebinding Host")
    if APPS_URL:
        ap = urllib.parse.urlsplit(APPS_URL).port
        r = s.get(APPS_URL + "/apps/anything/", headers={"Host": "rebind.evil.example:%d" % ap})
        check_error(t, r, 421, code="MISDIRECTED_REQUEST", name="an apps listener request with a rebinding Host")
    # the same over HTTP/2 (Host is :authority there)
    st, ver, b = curl_h2("/healthz", {"Host": evil_host.replace(str(PORT), str(HTTPS_PORT))})
    t.ok(st == 421 and ver == "2" and error_code(b.encode()) == "MISDIRECTED_REQUEST",
         "HTTP/2: a rebinding :authority -> 421", {"status": st, "version": ver, "body": b[:300]})
    st, ver, b = curl_h2("/containers", {"Origin": EVIL}, method="POST", data=body)
    t.ok(st == 403 and ver == "2" and error_code(b.encode()) == "CROSS_ORIGIN_REFUSED",
         "HTTP/2: POST /containers with a foreign Origin -> 403", {"status": st, "version": ver, "body": b[:300]})
    st, ver, b = curl_h2("/healthz", {"Origin": "https://127.0.0.1:%d" % HTTPS_PORT})
    t.ok(st == 200 and ver == "2", "HTTP/2: GET /healthz from its own origin -> 200", {"status": st, "body": b[:300]})
    t.eq(state(), before, "nothing created by the rebinding requests")
    t.eq(exec_ids(cuid), execs, "no exec started by the rebinding upgrade")

    # ---- an app's origin calling the API
    if APPS_URL:
        app_origin = APPS_URL
        for method, path in (("GET", "/containers"), ("GET", "/healthz"), ("POST", "/containers")):
            r = s.request(method, path, json=spec if method == "POST" else None, headers={"Origin": app_origin})
            check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="%s %s from an app's origin" % (method, path))
        r = s.get("/containers", headers={"Origin": app_origin.replace("127.0.0.1", "localhost")})
        check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="GET /containers from an app's origin (localhost)")
        st, h, b = ws_upgrade("/ws/%s?command=id" % cuid, origin=app_origin)
        t.ok(st == 403 and error_code(b) == "CROSS_ORIGIN_REFUSED", "WebSocket upgrade from an app's origin -> 403",
             {"status": st, "body": b[:300].decode("latin-1")})
        r = s.get("/containers/%s/logs" % cuid, params={"tail": "1"}, headers={"Origin": app_origin})
        check_error(t, r, 403, code="CROSS_ORIGIN_REFUSED", name="GET /containers/{cuid}/logs from an app's origin")
        r = s.get(APPS_URL + "/containers")
        check_error(t, r, 404, code="ROUTE_NOT_FOUND", name="the apps listener does not serve the API")
        t.eq(state(), before, "nothing created from the app's origin")
        t.eq(exec_ids(cuid), execs, "no exec started from the app's origin")
    else:
        t.skip("app origin", "CM_APPS_URL not set")

    # ---- allowed
    made = []

    def create_ok(name, **kw):
        r = s.post("/containers", json=spec, **kw)
        ok = t.status(r, 201, name)
        if ok:
            made.append(r.json().get("cuid"))
            t.add_cleanup(lambda c=made[-1]: destroy(s, c))
        return ok

    create_ok("POST /containers without an Origin (curl, the seed clients)")
    create_ok("POST /containers from its own origin", headers={"Origin": URL, "Sec-Fetch-Site": "same-origin"})
    create_ok("POST /containers from the other API listener's origin",
              headers={"Origin": "https://localhost:%d" % HTTPS_PORT, "Sec-Fetch-Site": "same-site"})
    create_ok("POST /containers from an origin of ALLOWED_ORIGINS",
              headers={"Origin": LISTED, "Sec-Fetch-Site": "cross-site"})
    create_ok("POST /containers as application/json; charset=utf-8",
              headers={"Content-Type": "application/json; charset=utf-8"})
    r = s.get("/containers", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    t.status(r, 200, "a cross-site GET is answered (the browser keeps the answer from the page)")
    r = s.post("/containers/%s/restart" % cuid, headers={"Content-Type": ""})
    t.status(r, 200, "POST /containers/{cuid}/restart with an empty body and no Content-Type")
    for host in ("localhost:%d" % PORT, "[::1]:%d" % PORT, "127.0.0.1", "cm.cm-test.example:%d" % PORT,
                 "CM.cm-test.example.:%d" % PORT, "192.0.2.7:%d" % PORT):
        st, h, b = raw(b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
        t.ok(st in (200, 401), "Host %s is accepted" % host, {"status": st, "body": b[:200].decode("latin-1")})
    st, h, b = ws_upgrade("/ws/%s?command=true" % cuid, origin=URL)
    t.eq(st, 101, "WebSocket upgrade from the service's own origin -> 101")
    st, h, b = ws_upgrade("/ws/%s/logs?tail=1" % cuid, origin=LISTED)
    t.eq(st, 101, "WebSocket logs upgrade from an origin of ALLOWED_ORIGINS -> 101")


run(main)
