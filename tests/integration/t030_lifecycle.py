#!/usr/bin/python3
"""t030 lifecycle: start / pause / unpause / restart / stop / delete, each checked against what
Docker and the filesystem really hold; impossible transitions are 422 state_error."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

STOPPED = ("exited", "stopped")
STATUS_KEYS = {"cuid", "status", "running", "paused", "exit_code", "started_at", "finished_at",
               "restart_count", "ports"}


def status_mismatches(st, info):
    """Differences between GET /status and Docker inspect (empty list = consistent)."""
    d = info["State"]
    out = []
    for k in ("started_at", "finished_at"):
        if st.get(k) is not None and not (isinstance(st[k], str) and RFC3339_Z.match(st[k])):
            out.append("%s %r is not RFC 3339 UTC with Z" % (k, st[k]))
    if st.get("running") != bool(d.get("Running")):
        out.append("running %r vs Docker %r" % (st.get("running"), d.get("Running")))
    if st.get("paused") != bool(d.get("Paused")):
        out.append("paused %r vs Docker %r" % (st.get("paused"), d.get("Paused")))
    want = "paused" if d.get("Paused") else ("running" if d.get("Running") else None)
    if want and st.get("status") != want:
        out.append("status %r vs Docker %s" % (st.get("status"), d.get("Status")))
    if not d.get("Running") and d.get("Status") == "exited":
        if st.get("status") not in STOPPED:
            out.append("status %r vs Docker exited" % st.get("status"))
        if st.get("exit_code") != d.get("ExitCode"):
            out.append("exit_code %r vs Docker %r" % (st.get("exit_code"), d.get("ExitCode")))
    if not same_time(st.get("started_at"), d.get("StartedAt")):
        out.append("started_at %r vs Docker %r" % (st.get("started_at"), d.get("StartedAt")))
    if not d.get("Running") and not same_time(st.get("finished_at"), d.get("FinishedAt")):
        out.append("finished_at %r vs Docker %r" % (st.get("finished_at"), d.get("FinishedAt")))
    return out


def check_status(t, s, cuid, label, timeout=10):
    """Poll GET /status until it agrees with Docker inspect (the runner follows events)."""
    last = {}

    def f():
        r = s.get("/containers/%s/status" % cuid)
        info = docker_inspect(cuid)
        last["r"], last["info"] = r, info
        if r.status_code != 200 or info is None:
            return False
        last["mm"] = status_mismatches(r.json(), info)
        return not last["mm"]

    okv = wait_until(f, timeout=timeout, interval=0.1)
    r = last.get("r")
    t.ok(okv, "%s: GET /status matches Docker inspect" % label,
         {"mismatches": last.get("mm"), "status": jbody(r) if r is not None else None,
          "docker_state": (last.get("info") or {}).get("State")})
    return jbody(r) if r is not None else {}


def act(t, s, cuid, a, want_status, label=None, **kw):
    r = action(s, cuid, a, **kw)
    label = label or a
    t.status(r, 200, "%s %s" % (label, cuid[:12]))
    b = jbody(r) or {}
    wants = want_status if isinstance(want_status, tuple) else (want_status,)
    t.ok(b.get("cuid") == cuid and b.get("status") in wants, "%s answers {cuid, status: %s}" % (label, "|".join(wants)),
         b)
    return r


def main(t):
    s = api()
    c = must_create(s, t, "create container for lifecycle")
    cuid = c["cuid"]
    t.eq((docker_state(cuid) or {}).get("Status"), "created", "Docker: created before start")
    st = s.get("/containers/%s/status" % cuid)
    t.status(st, 200, "GET /status of a created container")
    stb = jbody(st) or {}
    t.ok(STATUS_KEYS <= set(stb), "status object has every contract key", {"missing": sorted(STATUS_KEYS - set(stb))})
    t.ok(stb.get("status") == "created" and stb.get("running") is False and stb.get("started_at") is None,
         "created: status created, not running, started_at null", stb)

    # start
    act(t, s, cuid, "start", "running")
    info = docker_inspect(cuid)
    t.ok(info["State"]["Running"] is True and info["State"]["Paused"] is False, "Docker: running after start",
         info["State"])
    started1 = info["State"]["StartedAt"]
    check_status(t, s, cuid, "running")
    act(t, s, cuid, "start", "running", "start again (idempotent)")
    t.eq(docker_inspect(cuid)["State"]["StartedAt"], started1, "start again did not restart the container")

    # pause / unpause
    act(t, s, cuid, "pause", "paused")
    info = docker_inspect(cuid)
    t.ok(info["State"]["Paused"] is True, "Docker: State.Paused after pause", info["State"])
    check_status(t, s, cuid, "paused")
    g = s.get("/containers/" + cuid)
    t.eq((jbody(g) or {}).get("status"), "paused", "GET object says paused")
    r = action(s, cuid, "pause")
    check_error(t, r, 422, "state_error", "INVALID_TRANSITION", name="pause a paused container")
    t.ok(docker_inspect(cuid)["State"]["Paused"] is True, "Docker: still paused after the refused pause")
    r = action(s, cuid, "stop", json={"timeout": 1})
    t.ok(r.status_code in (200, 422), "stop a paused container: 200 or 422", {"got": r.status_code})
    if r.status_code == 200:
        # the service chose to stop it: get back to running+paused for the rest of the test
        act(t, s, cuid, "start", "running", "start after stopping a paused one")
        act(t, s, cuid, "pause", "paused", "pause again")
    act(t, s, cuid, "unpause", "running")
    info = docker_inspect(cuid)
    t.ok(info["State"]["Running"] is True and info["State"]["Paused"] is False, "Docker: running after unpause",
         info["State"])
    r = action(s, cuid, "unpause")
    check_error(t, r, 422, "state_error", "INVALID_TRANSITION", name="unpause a running container")
    check_status(t, s, cuid, "unpaused")

    # restart: StartedAt moves forward
    before = parse_time(docker_inspect(cuid)["State"]["StartedAt"])
    time.sleep(0.05)
    act(t, s, cuid, "restart", "running")
    info = docker_inspect(cuid)
    after = parse_time(info["State"]["StartedAt"])
    t.ok(info["State"]["Running"] and after > before, "Docker: restart changed StartedAt and is running",
         {"before": str(before), "after": str(after)})
    sb = check_status(t, s, cuid, "restarted")

    # stop with a timeout in the body
    t0 = time.monotonic()
    act(t, s, cuid, "stop", STOPPED, "stop {timeout:2}", json={"timeout": 2})
    took = time.monotonic() - t0
    info = docker_inspect(cuid)
    t.ok(info["State"]["Running"] is False and info["State"]["Status"] == "exited", "Docker: not running after stop",
         info["State"])
    t.ok(took < 15, "stop with timeout 2 returned in time (%.1fs)" % took)
    sb = check_status(t, s, cuid, "stopped")
    t.ok(sb.get("status") in STOPPED and sb.get("exit_code") is not None and sb.get("finished_at"),
         "stopped: status exited/stopped with exit_code and finished_at", sb)
    act(t, s, cuid, "stop", STOPPED, "stop again (idempotent)")
    r = action(s, cuid, "pause")
    check_error(t, r, 422, "state_error", "INVALID_TRANSITION", name="pause a stopped container")
    r = action(s, cuid, "unpause")
    check_error(t, r, 422, "state_error", "INVALID_TRANSITION", name="unpause a stopped container")
    t.ok(docker_inspect(cuid)["State"]["Running"] is False, "Docker: still stopped after refused transitions")

    # start again, stop with ?timeout=
    act(t, s, cuid, "start", "running", "start a stopped container")
    t.ok(docker_inspect(cuid)["State"]["Running"] is True, "Docker: running again")
    act(t, s, cuid, "stop", STOPPED, "stop ?timeout=1", params={"timeout": "1"})
    t.ok(docker_inspect(cuid)["State"]["Running"] is False, "Docker: stopped by ?timeout=1")
    r = action(s, cuid, "stop", params={"timeout": "soon"})
    check_error(t, r, 400, "validation_error", name="stop ?timeout=soon")
    r = action(s, cuid, "stop", json={"timeout": -3})
    check_error(t, r, 400, "validation_error", name="stop {timeout:-3}")

    # a state change made behind the service's back shows up (event stream)
    act(t, s, cuid, "start", "running", "start for the external-stop check")
    st_code, _ = docker_request("POST", "/containers/%s/kill?signal=KILL" % cuid)
    t.ok(st_code == 204, "docker kill outside the service", {"status": st_code})
    check_status(t, s, cuid, "after an external docker kill")
    g = s.get("/containers/" + cuid)
    t.ok((jbody(g) or {}).get("status") in STOPPED, "GET object reflects the external kill", jbody(g))

    # an unknown action and a missing container
    r = s.post("/containers/%s/explode" % cuid)
    check_error(t, r, 404, "not_found", "ROUTE_NOT_FOUND", name="POST /containers/<cuid>/explode")

    # DELETE (running container), Docker + files gone
    act(t, s, cuid, "start", "running", "start before delete")
    d = os.path.join(DATA_DIR, "containers", cuid)
    with open(os.path.join(d, "app", "keepme.txt"), "w") as f:
        f.write("x")
    r = s.delete("/containers/" + cuid)
    t.status(r, 204, "DELETE a running container")
    t.eq(r.content, b"", "204 has no body")
    t.ok(docker_inspect(cuid) is None, "Docker: container gone (inspect 404)")
    t.ok(docker_inspect(c["docker_id"]) is None, "Docker: old docker_id gone too")
    t.ok(not os.path.exists(d), "files: CM_DATA_DIR/containers/<cuid> removed", {"path": d})
    t.ok(cuid not in (db_container_cuids() or []), "DB: row gone")
    r = s.get("/containers/" + cuid)
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="GET after DELETE")
    r = s.get("/containers/%s/status" % cuid)
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="GET /status after DELETE")
    r = action(s, cuid, "start")
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="start after DELETE")
    r = s.delete("/containers/" + cuid)
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="DELETE twice")

    # DELETE ?keep_files=true
    c2 = must_create(s, t, "create container for keep_files")
    cuid2 = c2["cuid"]
    d2 = os.path.join(DATA_DIR, "containers", cuid2)
    with open(os.path.join(d2, "app", "data.txt"), "w") as f:
        f.write("precious")
    r = s.delete("/containers/" + cuid2, params={"keep_files": "true"})
    t.status(r, 204, "DELETE ?keep_files=true")
    t.ok(docker_inspect(cuid2) is None, "keep_files: Docker container gone")
    p = os.path.join(d2, "app", "data.txt")
    t.ok(os.path.exists(p) and open(p).read() == "precious", "keep_files: app dir and its file kept", {"path": p})
    check_error(t, s.get("/containers/" + cuid2), 404, "not_found", "CONTAINER_NOT_FOUND",
                name="GET after keep_files DELETE")
    subprocess.call(["rm", "-rf", "--", d2])

    # invalid cuids -> 400 INVALID_CUID
    for bad in ("bad!cuid", "x" * 300, "a%20b", "bad%27cuid"):
        r = s.get("/containers/" + bad)
        check_error(t, r, 400, "validation_error", "INVALID_CUID", name="GET /containers/%s" % bad[:20])
    check_error(t, action(s, "bad!cuid", "start"), 400, "validation_error", "INVALID_CUID",
                name="POST /containers/bad!cuid/start")
    check_error(t, s.delete("/containers/bad!cuid"), 400, "validation_error", "INVALID_CUID",
                name="DELETE /containers/bad!cuid")


if __name__ == "__main__":
    run(main)
