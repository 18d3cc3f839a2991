#!/usr/bin/python3
"""t090 crash: kill -9 a FastCGI worker during a stream of requests (later requests succeed,
the worker is respawned); kill -9 the job runner in the middle of jobs (it is respawned, and
afterwards the database and Docker agree, and the database is intact)."""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def fcgi_tree():
    """(supervisor pid, [worker pids]) of cm-fcgi under our launcher."""
    ps = find_procs("cm-fcgi")
    if not ps:
        return None, []
    pids = {p[0] for p in ps}
    tops = [p for p in ps if p[1] not in pids]
    sup = min(tops or ps, key=lambda p: (p[2], p[0]))[0]
    workers = [p[0] for p in ps if p[1] == sup]
    return sup, workers


def workers_min():
    """WORKERS_MIN of this stack's env file (2 when it sets none)."""
    try:
        with open(os.environ.get("CM_ENV_FILE", "")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k == "WORKERS_MIN" and v.strip().strip('"').isdigit():
                    return int(v.strip().strip('"'))
    except OSError:
        pass
    return 2


def runner_pid():
    ps = find_procs("cm-runner")
    if not ps:
        return None
    pids = {p[0] for p in ps}
    tops = [p for p in ps if p[1] not in pids]
    return min(tops or ps, key=lambda p: (p[2], p[0]))[0]


class Stream(threading.Thread):
    """GET /containers in a loop (bounded count), recording (start, end, status)."""

    def __init__(self, max_requests=400):
        super().__init__(daemon=True)
        self.results = []
        self.stop = False
        self.max_requests = max_requests

    def run(self):
        s = api(timeout=20)
        for _ in range(self.max_requests):
            if self.stop:
                break
            t0 = time.monotonic()
            try:
                st = s.get("/containers", params={"limit": 5}).status_code
            except Exception as e:  # connection reset etc.
                st = repr(e)[:80]
            self.results.append((t0, time.monotonic(), st))


def consistency():
    """Problems between the containers table and Docker (empty = consistent)."""
    problems = []
    cuids = set(db_container_cuids() or [])
    for c in sorted(cuids):
        info = docker_inspect(c)
        if info is None:
            problems.append("DB row %s has no Docker container" % c)
        elif (info["Config"].get("Labels") or {}).get(LABEL) != c:
            problems.append("Docker container %s lacks label %s=%s" % (c, LABEL, c))
    data = os.path.realpath(DATA_DIR)
    for c in docker_list_labelled():
        name = (c.get("Names") or ["/?"])[0].lstrip("/")
        srcs = [os.path.realpath(m.get("Source", "")) for m in c.get("Mounts") or []]
        if any(x == data or x.startswith(data + "/") for x in srcs) and name not in cuids:
            problems.append("Docker container %s (labelled, bind in our data dir) has no DB row" % name)
    return problems


def main(t):
    s = api()
    before_cuids = set(db_container_cuids() or [])

    def cleanup_new():
        for c in set(db_container_cuids() or []) - before_cuids:
            destroy(s, c)
        for name in set(ours_managed()) - before_cuids:
            destroy(s, name)

    t.add_cleanup(cleanup_new)

    # ------------------------------------------------------------ worker crash
    sup, workers = fcgi_tree()
    if not t.ok(sup and workers, "found the cm-fcgi supervisor and its workers", {"sup": sup, "workers": workers,
                                                                                     "procs": find_procs("cm-fcgi")}):
        return
    streams = [Stream(), Stream()]
    for x in streams:
        x.start()
    time.sleep(0.5)
    # kill all but WORKERS_MIN - 1 of them, so that the supervisor must start new ones (a pool
    # that had grown above WORKERS_MIN may rightly stay smaller after losing one worker)
    need = workers_min()
    victims = workers[max(need - 1, 0):] or workers[-1:]
    t.diag("%d workers, killing %d (WORKERS_MIN=%d)" % (len(workers), len(victims), need))
    for v in victims:
        os.kill(v, signal.SIGKILL)
    t_kill = time.monotonic()
    time.sleep(1.5)
    for x in streams:
        x.stop = True
    for x in streams:
        x.join(30)
    res = [r for x in streams for r in x.results]
    after = [r for r in res if r[0] > t_kill + 0.05]
    overlapping = [r for r in res if r[0] <= t_kill < r[1] or (t_kill - 0.05 <= r[0] <= t_kill + 0.05)]
    bad_after = [r for r in after if r[2] != 200]
    t.ok(len(after) >= 5, "requests kept flowing after the kill (%d)" % len(after))
    t.ok(not bad_after, "every request started after the worker kill succeeded",
         {"failed": [(round(a - t_kill, 3), st) for a, _, st in bad_after[:10]]})
    bad_overlap = [r for r in overlapping if r[2] != 200]
    if bad_overlap:
        t.diag("requests in flight at the kill that failed: %s" % [str(r[2]) for r in bad_overlap])
    t.ok(all(r[2] == 200 for r in res if r[1] < t_kill), "all requests before the kill succeeded")

    def respawned():
        sup2, w2 = fcgi_tree()
        return (sup2 == sup and not set(victims) & set(w2) and len(w2) >= min(need, len(workers))
                and (set(w2) - set(workers)))

    t.ok(wait_until(respawned, timeout=10), "the supervisor respawned workers (same supervisor, new pids, at least "
         "WORKERS_MIN=%d again)" % need, {"before": [sup, workers], "killed": victims, "after": fcgi_tree()})
    t.ok(all(s.get("/containers", params={"limit": 1}).status_code == 200 for _ in range(20)),
         "20 more requests after the respawn succeed")

    # ------------------------------------------------------------ runner crash
    r0 = runner_pid()
    if not t.ok(r0, "found the cm-runner process", find_procs("cm-runner")):
        return
    base = must_create(s, t, "create a container to restart during the crash")
    t.status(action(s, base["cuid"], "start"), 200, "start it")

    outcomes = []

    def fire(method, path, **kw):
        def go():
            try:
                r = api(timeout=90).request(method, path, **kw)
                outcomes.append((method, path, r.status_code, jbody(r)))
            except Exception as e:
                outcomes.append((method, path, repr(e)[:100], None))
        th = threading.Thread(target=go, daemon=True)
        th.start()
        return th

    def kill_runner_during(method, path, delay, **kw):
        rp = runner_pid()
        th = fire(method, path, **kw)
        time.sleep(delay)
        if rp:
            try:
                os.kill(rp, signal.SIGKILL)
            except ProcessLookupError:
                pass
        newp = wait_until(lambda: (runner_pid() not in (None, rp)) and runner_pid(), timeout=20)
        t.ok(newp, "runner respawned after kill -9 during %s %s (+%.2fs)" % (method, path, delay),
             {"old": rp, "now": runner_pid()})
        th.join(100)
        t.ok(not th.is_alive(), "the request in flight during the runner kill got an answer (%s %s)" % (method, path))

    spec = {"image": IMAGE, "command": ["sleep", "3600"], "tags": ["t090"]}
    kill_runner_during("POST", "/containers", 0.03, json=spec)
    kill_runner_during("POST", "/containers/%s/restart" % base["cuid"], 0.05)
    kill_runner_during("POST", "/containers", 0.2, json=spec)
    kill_runner_during("POST", "/containers/%s/stop" % base["cuid"], 0.02, json={"timeout": 1})
    answered_201 = []
    t.diag("answers during runner kills: %s" % [(m, p, st) for m, p, st, _ in outcomes])
    for m, p, st, b in outcomes:
        t.ok(isinstance(st, int) and (200 <= st < 300 or st in (502, 503, 504)),
             "in-flight %s %s answered a success or a 5xx (%s)" % (m, p, st), b)
        if m == "POST" and p == "/containers" and st == 201 and isinstance(b, dict):
            created = b.get("cuid", "-")
            t.ok(docker_inspect(created) is not None, "a create answered 201 during the kill exists in Docker")
            answered_201.append(created)

    # after the dust settles: health, consistency, integrity
    h = wait_until(lambda: s.get("/healthz").status_code == 200, timeout=20)
    t.ok(h, "/healthz is 200 again after the runner crashes")
    problems = []

    def settled():
        problems[:] = consistency()
        return not problems

    t.ok(wait_until(settled, timeout=30, interval=0.5),
         "every DB container row has its Docker container and every labelled Docker container has a DB row",
         problems)
    for created in answered_201:
        g = s.get("/containers/" + created)
        t.ok(g.status_code == 200 and created in (db_container_cuids() or []),
             "a create answered 201 during a runner kill still has its DB row and GET 200 after recovery",
             {"cuid": created, "get": g.status_code, "body": body_text(g)})
    rows = db_query("PRAGMA integrity_check")
    t.eq([list(r.values())[0] for r in rows], ["ok"], "PRAGMA integrity_check is ok")

    # the restarted runner does real work
    c = must_create(s, t, "create after the crashes")
    t.status(action(s, c["cuid"], "start"), 200, "start after the crashes")
    t.ok((docker_state(c["cuid"]) or {}).get("Running") is True, "Docker: running")
    t.status(s.delete("/containers/" + c["cuid"]), 204, "delete after the crashes")
    t.ok(docker_inspect(c["cuid"]) is None, "Docker: gone")
    st = s.get("/containers/%s/status" % base["cuid"])
    info = docker_inspect(base["cuid"])
    t.ok(st.status_code == 200 and info is not None
         and (jbody(st) or {}).get("running") == info["State"]["Running"],
         "the container acted on during the kills: status agrees with Docker",
         {"status": jbody(st), "docker": (info or {}).get("State")})


if __name__ == "__main__":
    run(main)
