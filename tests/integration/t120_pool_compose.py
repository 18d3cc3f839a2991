#!/usr/bin/python3
"""t120 pool and compose: the worker pool grows under concurrent load and is replaced on
SIGHUP without failing requests; compose's own CLI sees managed containers by project."""
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def pool():
    """(supervisor pid, [worker pids]) of this stack's cm-fcgi."""
    procs = find_procs("cm-fcgi")
    pids = {p[0] for p in procs}
    sup = [p for p in procs if p[1] not in pids]
    if not sup:
        return None, []
    return sup[0][0], [p[0] for p in procs if p[1] == sup[0][0]]


def main(t):
    s = api()
    c = must_create(s, t, tags=["compose"])["cuid"]
    t.status(action(s, c, "start"), 200, "start")

    # -- compose: `docker-compose -p <cuid> ps|logs` in the container's directory (v1), or
    #    `docker compose -p <cuid> ps` (v2) where the plugin exists
    cdir = os.path.join(DATA_DIR, "containers", c)
    if shutil.which("docker-compose"):
        p = subprocess.run(["docker-compose", "-p", c, "ps"], cwd=cdir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode()
        t.ok(p.returncode == 0 and c in out and "Up" in out, "docker-compose -p <cuid> ps lists the running container", out)
        p = subprocess.run(["docker-compose", "-p", c, "logs", "--tail", "5"], cwd=cdir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        t.ok(p.returncode == 0, "docker-compose -p <cuid> logs works", p.stdout.decode()[-500:])
    else:
        t.skip("docker-compose -p <cuid> ps", "docker-compose v1 not installed")
    p = subprocess.run(["docker", "compose", "version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode == 0:
        p = subprocess.run(["docker", "compose", "-p", c, "ps"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        t.ok(p.returncode == 0 and c in p.stdout.decode(), "docker compose -p <cuid> ps (v2)", p.stdout.decode())
    else:
        t.skip("docker compose -p <cuid> ps (v2)", "the compose v2 plugin is not installed")

    # -- the pool grows when every worker is busy (slow requests: stop with a grace period)
    sup, before = pool()
    t.ok(sup is not None and len(before) >= 1, "found the cm-fcgi supervisor and its workers", before)
    slow = [must_create(s, t, command=["sh", "-c", "trap '' TERM; sleep 3600"])["cuid"] for _ in range(3)]
    for x in slow:
        action(s, x, "start")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(lambda x=x: api().post("/containers/%s/stop" % x, json={"timeout": 3})) for x in slow]
        time.sleep(1.5)
        # while three workers wait on slow stops, reads still answer quickly
        t0 = time.time()
        r = api().get("/containers/%s" % c)
        t.ok(r.status_code == 200 and time.time() - t0 < 2.0, "reads answer while workers wait on slow jobs",
             {"status": r.status_code, "seconds": time.time() - t0})
        _, during = pool()
        res = [f.result() for f in futs]
    t.ok(all(r.status_code == 200 for r in res), "the slow stops all succeeded", [r.status_code for r in res])
    # three workers wait on the slow stops and one more answered the read: with WORKERS_MIN=2
    # that is only possible if the pool grew
    t.ok(len(during) >= 4, "the pool grew beyond its idle size under load",
         {"before": len(before), "during": len(during)})

    # -- SIGHUP replaces every worker; requests keep succeeding meanwhile
    sup, old = pool()
    stop = time.time() + 4
    codes = []

    def hammer():
        ss = api()
        while time.time() < stop:
            codes.append(ss.get("/containers/%s" % c).status_code)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        fs = [ex.submit(hammer) for _ in range(4)]
        time.sleep(0.5)
        os.kill(sup, signal.SIGHUP)
        for f in fs:
            f.result()
    t.ok(codes and all(x == 200 for x in codes), "no request failed across the reload",
         {"requests": len(codes), "non-200": [x for x in codes if x != 200][:10]})
    ok = wait_until(lambda: (lambda p: p[1] and not set(p[1]) & set(old))(pool()), timeout=20)
    t.ok(ok, "after SIGHUP every worker is a new process", {"old": old, "now": pool()[1]})
    t.eq(pool()[0], sup, "the supervisor itself stayed")


if __name__ == "__main__":
    run(main)
