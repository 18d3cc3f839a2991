#!/usr/bin/python3
"""t220 jobs: asynchronous changes (?async=true, Prefer: respond-async) answer 202 with a job;
GET /jobs/{id} (with ?wait= long polling), GET /jobs (filters, cursor pages), DELETE /jobs/{id}
(cancel while queued: 200; 409 once running or ended), a cancelled create leaves no row and no
container, a synchronous waiter of a cancelled job hears 409, and a request that outlives
JOB_TIMEOUT answers 202 with its job (private stack) instead of timing out."""
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

JOB_KEYS = {"id", "kind", "cuid", "status", "progress", "result", "error", "attempts", "request_id", "created_at",
            "started_at", "finished_at", "status_url"}


def accepted(t, r, name):
    """Checks a 202 job answer; returns the job id or None."""
    b = jbody(r) or {}
    ok = (r.status_code == 202 and isinstance(b.get("job_id"), int) and b.get("status_url") == "/jobs/%s" % b.get("job_id")
          and r.headers.get("Location") == b.get("status_url"))
    t.ok(ok, "%s -> 202 with job_id, status_url and Location" % name,
         {"status": r.status_code, "body": body_text(r), "location": r.headers.get("Location")})
    return b.get("job_id") if ok else None


def main(t):
    s = api()

    # -- ?async=true on create: 202 at once, the job then succeeds and Docker has the container
    t0 = time.monotonic()
    r = s.post("/containers?async=true", json={"image": IMAGE, "tags": ["t220"], "command": SLEEP_CMD})
    took = time.monotonic() - t0
    jid = accepted(t, r, "POST /containers?async=true")
    if not jid:
        return
    t.diag("async create answered in %.3f s" % took)
    r = s.get("/jobs/%d" % jid, params={"wait": 30})
    j = jbody(r) or {}
    t.ok(r.status_code == 200 and JOB_KEYS <= set(j), "GET /jobs/{id}?wait=30 -> the job object", body_text(r))
    t.eq(j.get("status"), "succeeded", "the async create succeeded")
    t.eq(j.get("kind"), "create", "its kind is create")
    cuid = j.get("cuid")
    res = j.get("result") or {}
    t.ok(cuid and res.get("cuid") == cuid and res.get("url") == "/containers/%s" % cuid, "the job's result names its container", j)
    info = docker_inspect(cuid)
    t.ok(info is not None and info.get("Id") == res.get("docker_id"), "Docker has the container the async create made, "
         "with the result's docker_id", res)
    t.status(s.get("/containers/%s" % cuid), 200, "GET /containers/{cuid} of it")
    t.ok(all(j.get(k) for k in ("created_at", "started_at", "finished_at")) and j.get("error") is None,
         "timestamps set, error null", j)
    aud = wait_until(lambda: db_query("SELECT status, job_id FROM audit WHERE request_id = ?",
                                      (r.headers.get("X-Request-Id"),)), timeout=5)
    t.ok(aud, "GET /jobs/{id} is audited")

    # -- Prefer: respond-async on an action; Preference-Applied; the container really starts
    r = s.post("/containers/%s/start" % cuid, headers={"Prefer": "wait=5, respond-async"})
    jid2 = accepted(t, r, "POST start with Prefer: respond-async")
    t.eq(r.headers.get("Preference-Applied"), "respond-async", "Preference-Applied: respond-async")
    if jid2:
        j = s.get("/jobs/%d?wait=30" % jid2).json()
        t.eq(j.get("status"), "succeeded", "the async start succeeded")
    t.ok(wait_until(lambda: (docker_state(cuid) or {}).get("Running") is True, timeout=10), "Docker: running")

    # -- a failing async job: status failed with the error the synchronous call would give
    r = s.post("/containers/%s/unpause?async=1" % cuid)
    jf = accepted(t, r, "async unpause of a running container")
    if jf:
        j = s.get("/jobs/%d?wait=30" % jf).json()
        t.ok(j.get("status") == "failed" and (j.get("error") or {}).get("code") == "INVALID_TRANSITION"
             and (j.get("error") or {}).get("status") == 422, "it ends failed with 422 INVALID_TRANSITION", j)

    # -- cancel: jobs of one container run in order, so a job behind a slow stop (the container
    #    ignores SIGTERM and gets the whole grace period) stays queued meanwhile
    c2 = must_create(s, t, tags=["t220"], command=["sh", "-c", "trap '' TERM; sleep 3600"])["cuid"]
    action(s, c2, "start")

    def slow_stop(c, secs=3):
        r = s.post("/containers/%s/stop?async=true" % c, json={"timeout": secs})
        j = accepted(t, r, "async slow stop of %s" % c[:9])
        if j:
            wait_until(lambda: s.get("/jobs/%d" % j).json().get("status") == "running", timeout=10, interval=0.05)
        return j

    j1 = slow_stop(c2)
    r2 = s.post("/containers/%s/restart?async=true" % c2)
    j2 = accepted(t, r2, "async restart queued behind it")
    if j2:
        j = s.get("/jobs/%d" % j2).json()
        t.eq(j.get("status"), "queued", "GET /jobs/{id} of a job not yet run: queued")
        t0 = time.monotonic()
        r = s.get("/jobs/%d" % j2, params={"wait": 0.5})
        t.ok(r.status_code == 200 and r.json().get("status") == "queued" and time.monotonic() - t0 >= 0.45,
             "?wait=0.5 returns after the wait, still queued")
        r = s.delete("/jobs/%d" % j2)
        b = jbody(r) or {}
        t.ok(r.status_code == 200 and b.get("status") == "cancelled"
             and (b.get("error") or {}).get("code") == "JOB_CANCELLED", "DELETE /jobs/{id} of a queued job -> 200 cancelled",
             body_text(r))
        check_error(t, s.delete("/jobs/%d" % j2), 409, "conflict", "JOB_FINISHED", name="cancel it again")
    lst = s.get("/jobs", params={"cuid": c2, "status": "running,queued"})
    t.ok(lst.status_code == 200 and [x["id"] for x in lst.json()["jobs"]] == [j1],
         "GET /jobs?cuid=&status=running,queued lists the stop only", body_text(lst))
    if j1:
        check_error(t, s.delete("/jobs/%d" % j1), 409, "conflict", "JOB_RUNNING", name="cancel a running job")
        j = s.get("/jobs/%d?wait=30" % j1).json()
        t.eq(j.get("status"), "succeeded", "the running stop finishes")
        check_error(t, s.delete("/jobs/%d" % j1), 409, "conflict", "JOB_FINISHED", name="cancel a finished job")
    time.sleep(0.5)
    t.ok((docker_state(c2) or {}).get("Running") is False, "the cancelled restart never ran: the container stays stopped",
         docker_state(c2))
    t.eq([r["status"] for r in db_query("SELECT status FROM jobs WHERE id = ?", (j2,))], ["cancelled"],
         "the jobs table says cancelled")

    # -- a synchronous waiter of a job that gets cancelled hears 409 JOB_CANCELLED
    action(s, c2, "start")
    j3 = slow_stop(c2)
    res = {}
    th = threading.Thread(target=lambda: res.setdefault("r", api().post("/containers/%s/start" % c2, timeout=60)))
    th.start()
    q = wait_until(lambda: db_query("SELECT id FROM jobs WHERE cuid = ? AND kind = 'start' AND status = 'queued'", (c2,)),
                   timeout=10, interval=0.05)
    if q:
        t.status(s.delete("/jobs/%d" % q[0]["id"]), 200, "cancel the job a synchronous request waits for")
    th.join(30)
    r = res.get("r")
    if r is not None:
        check_error(t, r, 409, "cancelled", "JOB_CANCELLED", name="the waiting request")
    else:
        t.ok(False, "the waiting request got an answer")
    if j3:
        s.get("/jobs/%d?wait=30" % j3)

    # -- a cancelled create leaves nothing behind: every runner thread is busy with a slow stop
    #    (RUNNER_THREADS, 4 by default), so the create waits in the queue
    busy = []
    for _ in range(4):
        c = must_create(s, t, tags=["t220"], command=["sh", "-c", "trap '' TERM; sleep 3600"])["cuid"]
        action(s, c, "start")
        busy.append(c)
    stops = [s.post("/containers/%s/stop?async=true" % c, json={"timeout": 4}).json().get("job_id") for c in busy]
    wait_until(lambda: db_query("SELECT COUNT(*) AS n FROM jobs WHERE status = 'running'")[0]["n"] >= 4, timeout=10,
               interval=0.05)
    r = s.post("/containers", json={"image": IMAGE, "tags": ["t220-cancel"]}, headers={"Prefer": "respond-async"})
    jc = accepted(t, r, "async create while every runner thread is busy")
    ccuid = None
    if jc:
        j = s.get("/jobs/%d" % jc).json()
        ccuid = j.get("cuid")
        if t.eq(j.get("status"), "queued", "the create is queued"):
            t.status(s.get("/containers/%s" % ccuid), 200, "its row exists while queued (status creating)")
            t.status(s.delete("/jobs/%d" % jc), 200, "cancel the queued create")
            check_error(t, s.get("/containers/%s" % ccuid), 404, code="CONTAINER_NOT_FOUND", name="the row is gone")
    for j in stops:
        if j:
            s.get("/jobs/%d?wait=30" % j)
    if ccuid:
        time.sleep(0.5)
        t.ok(docker_inspect(ccuid) is None, "and the runner never made its container")
        t.eq(db_query("SELECT COUNT(*) AS n FROM container_tags WHERE tag = 't220-cancel'")[0]["n"], 0, "nor left its tags")
    for c in busy:
        destroy(s, c)

    # -- listing: newest first, filters, cursor pages that neither skip nor repeat
    ids = [x["id"] for x in db_query("SELECT id FROM jobs WHERE cuid = ? ORDER BY id DESC", (cuid,))]
    seen, cur, pages = [], None, 0
    while pages < 50:
        params = {"cuid": cuid, "limit": 2}
        if cur:
            params["cursor"] = cur
        r = s.get("/jobs", params=params)
        if r.status_code != 200:
            break
        b = r.json()
        seen += [x["id"] for x in b["jobs"]]
        cur = b.get("next_cursor")
        pages += 1
        if not cur:
            break
    t.eq(seen, ids, "GET /jobs?cuid=&limit=2 pages walk every job of the container once, newest first")
    r = s.get("/jobs", params={"kind": "create", "limit": 500})
    t.ok(r.status_code == 200 and all(x["kind"] == "create" for x in r.json()["jobs"]), "?kind=create filters")
    r = s.get("/jobs", params={"cuid": cuid, "limit": 1})
    c1 = r.json().get("next_cursor")
    check_error(t, s.get("/jobs", params={"cuid": c2, "limit": 1, "cursor": c1}), 400, code="INVALID_CURSOR",
                name="a cursor used with other filters")
    check_error(t, s.get("/jobs", params={"cursor": "x" * 48}), 400, code="INVALID_CURSOR", name="a forged cursor")
    check_error(t, s.get("/jobs", params={"status": "bogus"}), 400, code="INVALID_VALUE", field="status",
                name="an unknown status")
    check_error(t, s.get("/jobs", params={"limit": "0"}), 400, code="INVALID_VALUE", field="limit", name="limit 0")
    check_error(t, s.get("/jobs", params={"cuid": "x'; DROP TABLE jobs;--"}), 400, code="INVALID_VALUE", field="cuid",
                name="a cuid filter that is not an id")

    # -- bad input
    check_error(t, s.get("/jobs/abc"), 400, code="INVALID_JOB_ID", name="GET /jobs/abc")
    check_error(t, s.get("/jobs/0"), 400, code="INVALID_JOB_ID", name="GET /jobs/0")
    check_error(t, s.get("/jobs/99999999999"), 404, code="JOB_NOT_FOUND", name="GET /jobs/<unknown>")
    check_error(t, s.delete("/jobs/99999999999"), 404, code="JOB_NOT_FOUND", name="DELETE /jobs/<unknown>")
    check_error(t, s.get("/jobs/%d" % jid, params={"wait": "61"}), 400, code="INVALID_VALUE", field="wait", name="wait=61")
    check_error(t, s.get("/jobs/%d" % jid, params={"wait": "soon"}), 400, code="INVALID_VALUE", field="wait",
                name="wait=soon")
    check_error(t, s.post("/containers?async=maybe", json={"image": IMAGE}), 400, code="INVALID_VALUE", field="async",
                name="async=maybe")
    check_error(t, s.get("/containers?async=true"), 400, code="UNKNOWN_PARAMETER", field="async", name="async on a GET")
    r = s.post("/containers/%s/upload-zip?async=true" % cuid, data=b"PK\x05\x06" + b"\0" * 18,
               headers={"Content-Type": "application/zip"})
    check_error(t, r, 400, code="ASYNC_NOT_SUPPORTED", field="async", name="async upload-zip")
    n_before = db_query("SELECT COUNT(*) AS n FROM containers")[0]["n"]
    check_error(t, s.post("/containers?async=true", json={"image": ""}), 400, name="an invalid async create")
    t.eq(db_query("SELECT COUNT(*) AS n FROM containers")[0]["n"], n_before, "it queued nothing")
    r = requests.get(URL + "/jobs/%d" % jid)
    check_error(t, r, 401, "auth_error", name="GET /jobs/{id} without credentials")

    # -- a request that outlives JOB_TIMEOUT answers 202 with its job (private stack whose one
    #    runner thread is busy with a slow stop)
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("private stack with JOB_TIMEOUT=5 and RUNNER_THREADS=1", "no serve launcher (the installed units)")
    else:
        base = tempfile.mkdtemp(prefix="t220.", dir=os.environ.get("CM_IT_TMP") or None)
        st = PrivateStack(base, ["JOB_TIMEOUT=5", "RUNNER_THREADS=1", "BOOT_COMMAND=\"sleep 3600\"",
                                 "DEFAULT_USER_UID=1000:1000"])
        t.add_cleanup(st.stop)
        if t.ok(st.start(), "private stack with JOB_TIMEOUT=5 and RUNNER_THREADS=1", st.stderr[-1500:]):
            ps = st.session()
            made = []
            r = ps.post(st.url + "/containers", json={"image": IMAGE, "command": ["sh", "-c", "trap '' TERM; sleep 3600"]})
            slow = r.json().get("cuid") if r.status_code == 201 else None
            if t.ok(slow, "a container that ignores SIGTERM", body_text(r)):
                made.append(slow)
                ps.post(st.url + "/containers/%s/start" % slow)
                r = ps.post(st.url + "/containers/%s/stop?async=true" % slow, json={"timeout": 12})
                js = r.json().get("job_id")
                t0 = time.monotonic()
                r = ps.post(st.url + "/containers", json={"image": IMAGE, "tags": ["t220-timeout"]}, timeout=60)
                el = time.monotonic() - t0
                jt = accepted(t, r, "a create whose job cannot run within JOB_TIMEOUT")
                t.ok(5 <= el < 12, "it answered after about JOB_TIMEOUT (%.1f s), not a timeout error" % el)
                if jt:
                    j = ps.get(st.url + "/jobs/%d?wait=30" % jt).json()
                    t.eq(j.get("status"), "succeeded", "the job carried on and succeeded")
                    made.append(j.get("cuid"))
                    t.ok(docker_inspect(j.get("cuid")) is not None, "Docker has its container")
                ps.get(st.url + "/jobs/%s?wait=30" % js)
            for c in made:
                ps.delete(st.url + "/containers/%s" % c)
            t.ok(st.stop(), "the private stack stops")

    for c in (cuid, c2):
        destroy(s, c)


if __name__ == "__main__":
    run(main)
