#!/usr/bin/python3
"""t180 fault injection: CM_FAULT_KILLS (default 20; the hardening figure uses 200) SIGKILLs
of random FastCGI workers, of the job runner and of the WebSocket helper, at random moments
during mixed load from CM_LOAD_CLIENTS (default 8) clients. Afterwards the stack is healthy
again and: PRAGMA integrity_check is ok, no job stays queued or running more than 60 s after
the last kill, every container row matches a real Docker container and every managed Docker
container of this stack has a row, and nothing acknowledged was lost (a change that got no
answer or a 5xx may have happened, once, or not at all).

    CM_FAULT_KILLS=200 CM_LOAD_CLIENTS=16 tests/integration/run t180_fault_kills.py"""
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403
from loadgen import Client, clean_up_after, lost_writes, report  # noqa: E402

KILLS = int(os.environ.get("CM_FAULT_KILLS", "20"))
CLIENTS = int(os.environ.get("CM_LOAD_CLIENTS", "8"))
RUN_TAG = "fault-" + rand_suffix(6)


def targets():
    """(name, pid) candidates: each FastCGI worker, the runner, the WebSocket helper."""
    out = []
    fc = find_procs("cm-fcgi")
    if fc:
        pids = {p[0] for p in fc}
        sup = [p for p in fc if p[1] not in pids]
        sup_pid = min(sup or fc, key=lambda p: (p[2], p[0]))[0]
        out += [("worker", p[0]) for p in fc if p[1] == sup_pid]
    for name in ("cm-runner", "cm-ws"):
        ps = find_procs(name)
        if ps:
            pids = {p[0] for p in ps}
            top = [p for p in ps if p[1] not in pids]
            out.append((name, min(top or ps, key=lambda p: (p[2], p[0]))[0]))
    return out


def main(t):
    rng = random.Random(180)
    stats, lock = {}, threading.Lock()
    # the load runs as long as the kills take (about 0.3 s apart on average)
    seconds = max(15.0, KILLS * 0.35 + 5)
    clients = [Client(i, seconds, RUN_TAG, stats, lock) for i in range(CLIENTS)]
    for c in clients:
        c.start()
    kills = {}
    time.sleep(2)
    for _ in range(KILLS):
        cand = targets()
        # a worker 60% of the time, the runner and the helper 20% each
        kind = rng.choices(["worker", "cm-runner", "cm-ws"], [6, 2, 2])[0]
        pool = [c for c in cand if c[0] == kind] or cand
        if pool:
            name, pid = rng.choice(pool)
            try:
                os.kill(pid, signal.SIGKILL)
                kills[name] = kills.get(name, 0) + 1
            except ProcessLookupError:
                pass
        time.sleep(rng.uniform(0.05, 0.5))
    last_kill = time.monotonic()
    for c in clients:
        c.join(seconds + 300)
    t.diag("kills: %s" % kills)
    t.ok(sum(kills.values()) >= KILLS * 0.9, "%d SIGKILLs delivered (%s)" % (sum(kills.values()), kills))
    clean_up_after(t, clients)
    s = api()
    t.ok(not any(c.is_alive() for c in clients), "every client finished")
    total = report(t, stats, seconds, CLIENTS)
    fails = sum(1 for v in stats.values() for _, code in v if not isinstance(code, int) or code >= 500)
    t.diag("%d of %d requests failed with a 5xx or a broken connection while processes were killed" % (fails, total))

    def healthy():
        try:
            return s.get("/healthz", timeout=10).status_code == 200
        except Exception:
            return False
    t.ok(wait_until(healthy, timeout=60),
         "the stack is healthy again after the kills")
    t.ok(wait_until(lambda: db_query("SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'running')")[0]["n"] == 0,
                    timeout=60, interval=1), "no job queued or running 60 s after the last kill (%.0f s)"
         % (time.monotonic() - last_kill))
    t.eq(list(db_query("PRAGMA integrity_check")[0].values())[0], "ok", "integrity_check")
    # every row has its Docker container, every managed container of ours has its row
    rows = {r["cuid"]: r["docker_id"] for r in db_query("SELECT cuid, docker_id FROM containers")}
    managed = ours_managed()
    no_docker = [c for c, did in rows.items() if not did or docker_inspect(c) is None]
    no_row = [n for n in managed if n not in rows]
    t.eq(no_docker[:10], [], "every container row has a Docker container (%d rows)" % len(rows))
    t.eq(no_row[:10], [], "every managed Docker container has a row (%d containers)" % len(managed))
    lost, checked = lost_writes(clients)
    t.eq(lost[:20], [], "nothing acknowledged was lost: %d containers checked" % checked)
    # creates that got no answer happened at most once: no more containers than attempts
    created_rows = db_query("SELECT count(*) AS n FROM containers WHERE tags LIKE ?", ('%' + RUN_TAG + '%',))[0]["n"]
    attempts = sum(1 for _, code in stats.get("create", []))
    t.ok(created_rows <= attempts, "creates happened at most once (%d rows for %d attempts)" % (created_rows, attempts))


if __name__ == "__main__":
    run(main)
