#!/usr/bin/python3
"""t095 worker killed mid-request: a FastCGI worker SIGKILLed while it holds a POST /containers
gives the client a 5xx (JSON error body) and the create happens at most once (rows and Docker
containers counted per attempt); a worker killed while it holds a GET is invisible to the
client: nginx retries the GET on another worker."""
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ROUNDS = int(os.environ.get("CM_KILL_POST_ROUNDS", "12"))


def workers():
    ps = find_procs("cm-fcgi")
    pids = {p[0] for p in ps}
    sups = [p for p in ps if p[1] not in pids]
    if not sups:
        return []
    sup = sups[0][0]
    return [p[0] for p in ps if p[1] == sup]


def kill_all_workers():
    n = 0
    for w in workers():
        try:
            os.kill(w, signal.SIGKILL)
            n += 1
        except OSError:
            pass
    return n


def tagged(tag):
    """(rows carrying tag, Docker containers of those rows)."""
    rows = [r["cuid"] for r in db_query("SELECT c.cuid FROM containers c JOIN container_tags g ON g.seq = c.seq "
                                        "WHERE g.tag = ?", (tag,))]
    docker = [c for c in docker_list_labelled() if (c.get("Labels") or {}).get(LABEL) in rows]
    return rows, docker


def main(t):
    s = api()
    tag_base = "t095-" + rand_suffix(6)

    # -- deterministic: a worker is surely inside a slow POST (a stop that waits its full grace
    #    period: the container ignores SIGTERM) when every worker is killed
    c = must_create(s, t, tags=[tag_base + "-stop"], command=["sh", "-c", "trap '' TERM; sleep 3600"])["cuid"]
    t.status(action(s, c, "start"), 200, "start a container that ignores SIGTERM")
    res = {}

    def slow_stop():
        try:
            res["r"] = api().post("/containers/%s/stop" % c, json={"timeout": 3}, timeout=60)
        except Exception as e:  # noqa: BLE001
            res["exc"] = repr(e)

    th = threading.Thread(target=slow_stop)
    th.start()
    busy = wait_until(lambda: db_query("SELECT id FROM jobs WHERE cuid = ? AND kind = 'stop' AND status = 'running'",
                                       (c,)), timeout=10, interval=0.02)
    time.sleep(0.3)
    killed = kill_all_workers()
    th.join(70)
    r = res.get("r")
    t.ok(busy and killed >= 1, "the stop job was running when %d worker(s) were killed" % killed)
    if t.ok(r is not None and 500 <= r.status_code <= 599, "the client of the killed POST got a 5xx",
            {"status": getattr(r, "status_code", None), "exc": res.get("exc")}):
        check_error(t, r, r.status_code, name="the killed POST's answer is the JSON error body")
    t.ok(wait_until(lambda: (docker_state(c) or {}).get("Running") is False, timeout=15),
         "the stop still happened (the job outlived its worker)", docker_state(c))
    jobs = db_query("SELECT id, status FROM jobs WHERE cuid = ? AND kind = 'stop'", (c,))
    t.ok(len(jobs) == 1, "exactly one stop job: nginx did not retry the POST on another worker", jobs)
    destroy(s, c)
    wait_until(lambda: len(workers()) >= 1, timeout=10)

    # -- creates killed at random moments (before or after their job was queued)
    outcomes = []
    for i in range(ROUNDS):
        tag = "%s-%d" % (tag_base, i)
        res = {}

        def post(tag=tag, res=res):
            try:
                res["r"] = api().post("/containers", json={"image": IMAGE, "tags": [tag]}, timeout=60)
            except Exception as e:  # noqa: BLE001
                res["exc"] = repr(e)

        th = threading.Thread(target=post)
        th.start()
        time.sleep(0.01 + (i % 6) * 0.04 + random.random() * 0.02)
        killed = kill_all_workers()
        th.join(70)
        r = res.get("r")
        outcomes.append((tag, r.status_code if r is not None else res.get("exc"), killed, r))
        # the pool comes back before the next round
        wait_until(lambda: len(workers()) >= 1, timeout=10)
    codes = [o[1] for o in outcomes]
    t.diag("POST outcomes under worker kills: %s" % codes)
    t.ok(all(isinstance(c, int) and (c == 201 or 500 <= c <= 599) for c in codes),
         "every POST got an answer: 201 or a 5xx", codes)
    fivexx = [o for o in outcomes if isinstance(o[1], int) and o[1] >= 500]
    t.diag("%d of %d creates were caught by the kill" % (len(fivexx), len(outcomes)))
    for o in fivexx[:3]:
        check_error(t, o[3], o[1], name="the killed POST's answer (%s)" % o[1])

    # after the dust settles: each attempt made at most one container, rows and Docker agree
    def settled():
        return not db_query("SELECT id FROM jobs WHERE status IN ('queued', 'running')")
    t.ok(wait_until(settled, timeout=60, interval=0.5), "no job left queued or running")
    bad = []
    made = 0
    for tag, code, _, r in outcomes:
        rows, docker = tagged(tag)
        made += len(rows)
        if len(rows) > 1 or len(docker) > 1 or len(rows) != len(docker) or (code == 201 and len(rows) != 1):
            bad.append({"tag": tag, "answer": code, "rows": rows, "docker": [c["Id"][:12] for c in docker]})
    t.ok(not bad, "every attempt created at most once; answered creates exist; rows match Docker", bad)
    orphans = sorted(set(ours_managed()) - set(db_container_cuids() or []))
    t.ok(not orphans, "no Docker container of this stack is without a row", orphans)
    t.diag("%d attempts, %d answered 201, %d containers exist" % (len(outcomes), codes.count(201), made))
    for tag, _, _, _ in outcomes:
        for cuid in tagged(tag)[0]:
            destroy(s, cuid)

    # -- GETs: a killed worker's GET is retried by nginx on another worker
    c = must_create(s, t, tags=[tag_base + "-get"])["cuid"]
    stop = time.time() + 4
    codes = []
    errs = []

    def hammer():
        ss = api()
        while time.time() < stop:
            try:
                codes.append(ss.get("/containers/%s" % c, timeout=30).status_code)
            except Exception as e:  # noqa: BLE001
                errs.append(repr(e)[:200])

    ths = [threading.Thread(target=hammer) for _ in range(4)]
    for x in ths:
        x.start()
    kills = 0
    while time.time() < stop - 0.5:
        time.sleep(0.25)
        ws = workers()
        if ws:
            try:
                os.kill(random.choice(ws), signal.SIGKILL)
                kills += 1
            except OSError:
                pass
    for x in ths:
        x.join()
    t.diag("%d GETs while %d workers were killed" % (len(codes), kills))
    t.ok(kills >= 5 and len(codes) > 50, "GETs ran while workers were being killed (%d GETs, %d kills)" % (len(codes), kills))
    t.ok(not errs and all(x == 200 for x in codes), "every GET answered 200 (nginx retried the killed ones)",
         {"non-200": [x for x in codes if x != 200][:20], "errors": errs[:5]})


if __name__ == "__main__":
    run(main)
