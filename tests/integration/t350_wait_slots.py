#!/usr/bin/python3
"""t350 wait slots: long waits cannot pin the worker pool (private stack, WORKERS_MAX=4,
SYNC_WAIT_GRACE=5). Six synchronous stops of containers that ignore SIGTERM (jobs of ~25 s) are
sent at once, more than the workers: the first second of every wait is free, then a wait needs
one of the WORKERS_MAX - WORKERS_MAX/4 busy slots (three), and past SYNC_WAIT_GRACE one of the
WORKERS_MAX/2 waiter slots as well, so exactly two keep waiting and the other four answer 202
with their job: those without a busy slot after their free second, the third busy one at 5 s. While those two hang: 20 GET /healthz and 20 authenticated GETs
answer in under a second each, a fast synchronous create still answers 201, GET /jobs/{id}?wait=60
on a running job is 503 TOO_MANY_WAITERS with Retry-After (a wait of 5 s or less needs no slot;
an ended job answers at once), and every job still ends as it should in Docker."""
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

STOP_SECS = 25
N_STOPS = 6


def main(t):
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("private stack with WORKERS_MAX=4", "no serve launcher (the installed units)")
        return
    base = tempfile.mkdtemp(prefix="t350.", dir=os.environ.get("CM_IT_TMP") or None)
    st = PrivateStack(base, ["WORKERS_MIN=4", "WORKERS_MAX=4", "RUNNER_THREADS=10", "SYNC_WAIT_GRACE=%d" % CM_WAIT_GRACE,
                             "BOOT_COMMAND=\"sleep 3600\"",
                             "DEFAULT_USER_UID=1000:1000"])
    t.add_cleanup(st.stop)
    if not t.ok(st.start(), "private stack with WORKERS_MAX=4 (2 waiter slots)", st.stderr[-1500:]):
        return
    ps = st.session()
    made = []

    def cleanup():
        for c in made:
            try:
                ps.delete(st.url + "/containers/%s" % c, timeout=60)
            except Exception:  # noqa: BLE001
                pass
    t.add_cleanup(cleanup)

    for i in range(N_STOPS):
        r = ps.post(st.url + "/containers", json={"image": IMAGE, "command": ["sh", "-c", "trap '' TERM; sleep 3600"]},
                    timeout=60)
        if r.status_code == 201:
            made.append(r.json()["cuid"])
    if not t.eq(len(made), N_STOPS, "%d containers that ignore SIGTERM" % N_STOPS):
        return
    for c in made:
        ps.post(st.url + "/containers/%s/start" % c, timeout=60)
    t.ok(all((docker_state(c) or {}).get("Running") for c in made), "they run in Docker")

    # -- more long synchronous waits than workers
    results = {}
    t0 = time.monotonic()

    def stop(c):
        s = st.session()
        try:
            r = s.post(st.url + "/containers/%s/stop" % c, json={"timeout": STOP_SECS}, timeout=STOP_SECS + 60)
            results[c] = (r.status_code, time.monotonic() - t0, jbody(r) or {}, r.headers.get("Location"))
        except Exception as e:  # noqa: BLE001
            results[c] = (repr(e), time.monotonic() - t0, {}, None)
    ths = [threading.Thread(target=stop, args=(c,), daemon=True) for c in made]
    for th in ths:
        th.start()
    wait_until(lambda: len(results) >= N_STOPS - 2, timeout=2 * CM_WAIT_GRACE + 5, interval=0.1)
    time.sleep(0.5)
    early = dict(results)
    accepted = [v for v in early.values() if v[0] == 202]
    t.eq(len(early), N_STOPS - 2, "all but two of %d long synchronous stops answered early" % N_STOPS,
         {c: v[:2] for c, v in early.items()})
    # (four run at once on the four workers; the two queued behind them start when two answer)
    t.ok(len(accepted) == N_STOPS - 2 and all(0.5 <= v[1] < 2 * CM_WAIT_GRACE + 3 for v in accepted)
         and sum(1 for v in accepted if v[1] < CM_WAIT_GRACE - 0.5) == N_STOPS - 3
         and sum(1 for v in accepted if v[1] >= CM_WAIT_GRACE - 0.5) == 1,
         "... with 202: three after their free second without a busy slot, one at the %d s grace without a waiter slot"
         % CM_WAIT_GRACE, sorted(round(v[1], 2) for v in early.values()))
    t.ok(all(v[3] == "/jobs/%s" % v[2].get("job_id") for v in accepted), "... each with its job's Location")
    hanging = [c for c in made if c not in early]
    t.eq(len(hanging), 2, "two stops keep waiting (WORKERS_MAX/2 waiter slots)")

    # -- while they hang, the rest of the API answers at once
    slow = []
    for i in range(20):
        a = time.monotonic()
        try:
            code = ps.get(st.url + "/healthz", timeout=3).status_code
        except Exception as e:  # noqa: BLE001
            code = repr(e)
        el = time.monotonic() - a
        if code != 200 or el >= 1.0:
            slow.append(("healthz", code, round(el, 2)))
        a = time.monotonic()
        try:
            code = ps.get(st.url + "/containers/%s" % made[i % len(made)], timeout=3).status_code
        except Exception as e:  # noqa: BLE001
            code = repr(e)
        el = time.monotonic() - a
        if code != 200 or el >= 1.0:
            slow.append(("get", code, round(el, 2)))
    t.ok(not slow, "20 GET /healthz and 20 authenticated GET /containers/{cuid} answered in < 1 s each", slow)
    r = requests.get(st.url + "/containers", timeout=3)
    t.eq(r.status_code, 401, "a request without credentials is still answered at once (401)")
    a = time.monotonic()
    r = ps.post(st.url + "/containers", json={"image": IMAGE}, timeout=30)
    if r.status_code == 201:
        made.append(r.json()["cuid"])
    t.ok(r.status_code == 201 and time.monotonic() - a < CM_WAIT_GRACE,
         "a fast synchronous create still answers 201 (%.2f s)" % (time.monotonic() - a), body_text(r))

    # -- GET /jobs/{id}?wait= over the cap
    jid = accepted[0][2].get("job_id") if accepted else None
    if jid:
        a = time.monotonic()
        r = ps.get(st.url + "/jobs/%s?wait=60" % jid, timeout=10)
        el = time.monotonic() - a
        check_error(t, r, 503, "unavailable", "TOO_MANY_WAITERS", "wait", name="?wait=60 with every waiter slot taken")
        t.ok(r.headers.get("Retry-After") == "5" and el < 1.0,
             "it carries Retry-After: 5 and came at once (%.2f s)" % el, dict(r.headers))
        t.eq(((jbody(r) or {}).get("details") or {}).get("limit"), 2, "details.limit names the slots")
        a = time.monotonic()
        r = ps.get(st.url + "/jobs/%s?wait=2" % jid, timeout=10)
        el = time.monotonic() - a
        t.ok(r.status_code == 200 and (jbody(r) or {}).get("status") == "running" and 1.8 <= el < 4,
             "?wait=2 (within the free 5 s of a poll) needs no slot: 200, still running, after %.2f s" % el,
             body_text(r))
        done = (ps.get(st.url + "/jobs?kind=create&limit=1", timeout=10).json().get("jobs") or [{}])[0].get("id")
        a = time.monotonic()
        r = ps.get(st.url + "/jobs/%s?wait=60" % done, timeout=10)
        t.ok(r.status_code == 200 and r.json().get("status") == "succeeded" and time.monotonic() - a < 1.0,
             "?wait=60 on an ended job answers 200 at once, slots or not", body_text(r))

    # -- everything ends as it should
    for th in ths:
        th.join(STOP_SECS + 70)
    late = [results.get(c) for c in hanging]
    t.ok(all(v and v[0] == 200 and v[1] >= STOP_SECS - 1 for v in late),
         "the two slotted waits answered 200 when their stops ended", [v[:2] if v else None for v in late])
    ok = True
    for v in accepted:
        j = ps.get(st.url + "/jobs/%s?wait=30" % v[2].get("job_id"), timeout=60).json()
        ok = ok and j.get("status") == "succeeded"
    t.ok(ok, "the jobs answered with 202 carried on and succeeded")
    t.ok(all(not (docker_state(c) or {}).get("Running") for c in made[:N_STOPS]), "every container is stopped in Docker")
    t.ok(all(r == 200 for r in (ps.get(st.url + "/healthz", timeout=3).status_code,)), "the stack is healthy")

    cleanup()
    made.clear()
    t.ok(st.stop(), "the private stack stops")


CM_WAIT_GRACE = 5  # SYNC_WAIT_GRACE of the private stack

if __name__ == "__main__":
    run(main)
