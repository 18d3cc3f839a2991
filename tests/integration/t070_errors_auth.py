#!/usr/bin/python3
"""t070 errors, routes, auth, audit, /version, /healthz, HTTPS."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def allow_set(r):
    return {m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()}


def main(t):
    s = api()
    anon = api(auth=False)
    intruder = "intruder-" + rand_suffix()
    wrong = api(user=intruder, password="nope")
    wrong_pw = api(password=PASS + "x")

    # ------------------------------------------------------------ routes
    r = s.get("/no/such/route")
    check_error(t, r, 404, "not_found", "ROUTE_NOT_FOUND", name="GET /no/such/route")
    t.ok("application/json" in r.headers.get("Content-Type", ""), "404 is application/json",
         {"Content-Type": r.headers.get("Content-Type")})
    r = s.get("/containers/x/y/z/w")
    check_error(t, r, 404, "not_found", "ROUTE_NOT_FOUND", name="GET /containers/x/y/z/w")

    for method, path, must in [("PUT", "/containers", {"GET", "POST"}),
                               ("DELETE", "/containers", {"GET", "POST"}),
                               ("POST", "/healthz", {"GET"}),
                               ("POST", "/version", {"GET"})]:
        r = s.request(method, path)
        check_error(t, r, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", name="%s %s" % (method, path))
        t.ok(must <= allow_set(r) and method not in allow_set(r), "%s %s: Allow lists %s" % (method, path, sorted(must)),
             {"Allow": r.headers.get("Allow")})

    c = must_create(s, t, "create a container for route checks")
    cuid = c["cuid"]
    r = s.put("/containers/" + cuid, json={})
    check_error(t, r, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", name="PUT /containers/<cuid>")
    t.ok({"GET", "PATCH", "DELETE"} <= allow_set(r), "PUT /containers/<cuid>: Allow has GET, PATCH, DELETE",
         {"Allow": r.headers.get("Allow")})
    r = s.get("/containers/%s/start" % cuid)
    check_error(t, r, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", name="GET /containers/<cuid>/start")
    t.ok("POST" in allow_set(r), "GET .../start: Allow has POST", {"Allow": r.headers.get("Allow")})
    r = s.post("/containers/%s/ports" % cuid, json={"ports": []})
    check_error(t, r, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", name="POST /containers/<cuid>/ports")
    t.ok("PATCH" in allow_set(r), "POST .../ports: Allow has PATCH", {"Allow": r.headers.get("Allow")})

    # ------------------------------------------------------------ auth
    for path in ("/containers", "/containers/" + cuid, "/healthz", "/version", "/no/such/route"):
        r = anon.get(path)
        check_error(t, r, 401, "auth_error", "AUTH_REQUIRED", name="no auth: GET %s" % path)
        t.ok(re.match(r'^Basic realm=', r.headers.get("WWW-Authenticate", "")),
             "no auth: WWW-Authenticate: Basic realm=... on %s" % path, {"WWW-Authenticate": r.headers.get("WWW-Authenticate")})
    r = anon.post("/containers", json={"image": IMAGE})
    check_error(t, r, 401, "auth_error", "AUTH_REQUIRED", name="no auth: POST /containers")
    # every other resource answers the same without credentials, and with a wrong password
    others = [("GET", "/jobs"), ("GET", "/jobs/1"), ("GET", "/jobs/1/log"), ("DELETE", "/jobs/1"),
              ("GET", "/images"), ("GET", "/images/busybox:latest"), ("DELETE", "/images/busybox:latest"),
              ("POST", "/images/build?tag=x:1"), ("GET", "/volumes"), ("POST", "/volumes"), ("GET", "/volumes/v1"),
              ("DELETE", "/volumes/v1"), ("POST", "/containers/%s/commit" % cuid), ("GET", "/definitions"),
              ("GET", "/definitions/web"), ("POST", "/start_container"), ("POST", "/stop_container"),
              ("POST", "/unlock_container"), ("GET", "/shutdown")]
    bad_pw = api(auth=False)
    bad_pw.auth = (USER, PASS + "-wrong")
    for i, (method, path) in enumerate(others):
        r = anon.request(method, path)
        check_error(t, r, 401, "auth_error", "AUTH_REQUIRED", name="no auth: %s %s" % (method, path))
        if i % 4 == 0:  # a few: 20 wrong passwords in 10 s from one address start the throttle
            r = bad_pw.request(method, path)
            check_error(t, r, 401, "auth_error", "INVALID_CREDENTIALS", name="wrong password: %s %s" % (method, path))
    r = wrong_pw.get("/containers")
    check_error(t, r, 401, "auth_error", "INVALID_CREDENTIALS", name="wrong password")
    t.ok(r.headers.get("WWW-Authenticate", "").startswith("Basic realm="), "wrong password: WWW-Authenticate")
    r_intr = wrong.get("/containers/" + cuid)
    check_error(t, r_intr, 401, "auth_error", "INVALID_CREDENTIALS", name="unknown user")
    r = anon.get("/containers", headers={"Authorization": "Basic !!!notbase64"})
    check_error(t, r, 401, "auth_error", name="garbage Authorization header")
    r = anon.get("/containers", headers={"Authorization": "Bearer abc"})
    check_error(t, r, 401, "auth_error", name="Bearer instead of Basic")
    r = anon.delete("/containers/" + cuid)
    t.status(r, 401, "no auth: DELETE refused")
    t.ok(docker_inspect(cuid) is not None, "unauthenticated DELETE did not touch Docker")

    # ------------------------------------------------------------ X-Request-Id everywhere, unique
    ids = [x[3] for x in s.seen + anon.seen + wrong.seen + wrong_pw.seen]
    t.ok(all(ids), "every response so far had an X-Request-Id",
         [x for x in s.seen + anon.seen if not x[3]])
    t.ok(len(set(ids)) == len(ids), "request ids are unique", {"n": len(ids), "distinct": len(set(ids))})

    # ------------------------------------------------------------ /version, /healthz
    r = s.get("/version")
    t.status(r, 200, "GET /version")
    t.ok(re.match(r"^container-manager \d+\.\d+\.\d+\s*$", r.text), "/version is 'container-manager X.Y.Z'",
         {"body": r.text})
    t.ok(r.headers.get("Content-Type", "").startswith("text/plain"), "/version is text/plain",
         {"Content-Type": r.headers.get("Content-Type")})
    r = s.get("/healthz")
    t.status(r, 200, "GET /healthz")
    h = jbody(r) or {}
    t.ok(set(h) >= {"status", "compose_version", "docker_version", "db", "runner"} and h.get("status") == "ok",
         "/healthz fields", h)
    _, dv = docker_request("GET", "/version")
    t.eq(h.get("docker_version"), (dv or {}).get("Version"), "/healthz docker_version is the engine's version")
    t.ok(isinstance(h.get("compose_version"), str) and h.get("compose_version"), "compose_version is a non-empty string",
         h)

    # ------------------------------------------------------------ HTTPS listener
    hs = api(base=HTTPS_URL)
    hs.verify = False
    try:
        r = hs.get("/healthz")
        t.status(r, 200, "HTTPS GET /healthz with auth")
        hsts = r.headers.get("Strict-Transport-Security", "")
        t.ok(re.search(r"max-age=\d+", hsts), "HTTPS: Strict-Transport-Security set", {"HSTS": hsts})
        r = hs.get("/containers/" + cuid)
        t.ok(r.status_code == 200 and (jbody(r) or {}).get("cuid") == cuid, "HTTPS: GET a container")
        ha = api(base=HTTPS_URL, auth=False)
        ha.verify = False
        r = ha.get("/containers")
        check_error(t, r, 401, "auth_error", "AUTH_REQUIRED", name="HTTPS without auth")
        s.seen += hs.seen + ha.seen
    except requests.exceptions.RequestException as e:
        t.ok(False, "HTTPS listener on %s answers" % HTTPS_URL, repr(e))

    # ------------------------------------------------------------ audit
    rid = r_intr.headers.get("X-Request-Id")

    def row():
        rows = db_audit(rid) if rid else []
        return rows[0] if rows else None

    a = wait_until(row, timeout=5)
    t.ok(a is not None, "the failed login has an audit row (request_id %s)" % rid)
    if a:
        t.ok(a.get("status") == 401 and a.get("user") == intruder and a.get("remote_addr") == "127.0.0.1"
             and a.get("method") == "GET" and (a.get("path") or "").startswith("/containers/" + cuid),
             "failed login audit row: status 401, attempted user, remote 127.0.0.1, method, path", a)
        t.eq(a.get("error_code"), "INVALID_CREDENTIALS", "failed login audit row: error_code")
    rows = db_query("SELECT * FROM audit WHERE user = ? ", (intruder,))
    t.eq(len(rows), 1, "exactly one audit row for the intruder's single request")

    everyone = s.seen + anon.seen + wrong.seen + wrong_pw.seen
    missing = []

    def all_there():
        missing[:] = []
        for m, u, st, rid_ in everyone:
            got = db_audit(rid_) if rid_ else []
            if len(got) != 1 or got[0].get("status") != st or got[0].get("method") != m:
                missing.append({"request": "%s %s" % (m, u), "status": st, "request_id": rid_, "rows": got})
        return not missing

    wait_until(all_there, timeout=5, interval=0.2)
    t.ok(not missing, "every request of this test has exactly one audit row with its status and method "
                      "(%d requests)" % len(everyone), missing[:10])
    cols = set(db_columns("audit"))
    want_cols = {"ts", "request_id", "user", "remote_addr", "method", "path", "cuid", "action", "status",
                 "error_code", "duration_ms"}
    t.ok(want_cols <= cols, "audit table has the contract's columns", {"missing": sorted(want_cols - cols)})
    rid_create = [x[3] for x in s.seen if x[0] == "POST" and x[1].endswith("/containers") and x[2] == 201]
    if rid_create:
        ar = db_audit(rid_create[0])
        t.ok(ar and ar[0].get("cuid") == cuid and ar[0].get("user") == USER and ar[0].get("duration_ms") is not None,
             "create audit row has the cuid, the user and a duration", ar)


if __name__ == "__main__":
    run(main)
