#!/usr/bin/python3
"""t160 SQLite held by someone else: an outside process holds the database's write lock for
2 s (as an operator's `sqlite3` session might) while creates, tag changes, lifecycle actions
and reads arrive. Every request waits (busy timeout) and succeeds: no 500, no 503, and every
change is in the database and in Docker afterwards."""
import os
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

HOLD = 2.0


def main(t):
    s = api()
    base = must_create(s, t)["cuid"]
    t.status(action(s, base, "start"), 200, "start a container before the lock")
    results = []
    lock = threading.Lock()

    def call(label, fn):
        t0 = time.time()
        try:
            r = fn(api())
            code = r.status_code
            body = r.text[:300]
        except Exception as e:  # a transport failure is a failure too
            code, body = 0, repr(e)
        with lock:
            results.append((label, code, time.time() - t0, body))

    holder = sqlite3.connect(DB, timeout=30, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE settings SET value = value WHERE 0")  # the write lock is held from here
    held_at = time.time()
    jobs = [("create", lambda c: c.post("/containers", json={"image": IMAGE, "command": SLEEP_CMD, "tags": ["t160"]})),
            ("patch tags", lambda c: c.patch("/containers/%s" % base, json={"tags": ["t160-locked"]})),
            ("pause", lambda c: c.post("/containers/%s/pause" % base)),
            ("list", lambda c: c.get("/containers?limit=5")),
            ("get", lambda c: c.get("/containers/%s" % base)),
            ("status", lambda c: c.get("/containers/%s/status" % base))]
    threads = [threading.Thread(target=call, args=j) for j in jobs]
    for th in threads:
        th.start()
    time.sleep(HOLD)
    holder.execute("COMMIT")
    released = time.time() - held_at
    holder.close()
    for th in threads:
        th.join(60)
    t.ok(released >= HOLD, "the outside lock was held %.1f s" % released)
    t.eq(len(results), len(jobs), "every request answered")
    for label, code, secs, body in sorted(results):
        t.ok(200 <= code < 300, "%s during the lock -> %d after %.2f s" % (label, code, secs), body)
    reads = [r for r in results if r[0] in ("list", "get", "status")]
    t.ok(all(r[2] < 1.0 for r in reads), "reads did not wait for the writer (%s)" %
         ", ".join("%s %.2f s" % (r[0], r[2]) for r in reads))
    writes = [r for r in results if r[0] in ("create", "patch tags", "pause")]
    t.ok(all(r[2] >= HOLD - 0.3 for r in writes), "the writes waited for the lock (%s)" %
         ", ".join("%s %.2f s" % (r[0], r[2]) for r in writes))

    created = [r for r in results if r[0] == "create" and 200 <= r[1] < 300]
    cuid = jbody_text(created[0][3]).get("cuid") if created else None
    if cuid:
        t.add_cleanup(lambda: destroy(s, cuid))
        t.ok(db_query("SELECT count(*) AS n FROM containers WHERE cuid = ?", (cuid,))[0]["n"] == 1, "the create is in the database")
        t.ok(docker_inspect(cuid) is not None, "and in Docker")
    row = db_query("SELECT tags, status FROM containers WHERE cuid = ?", (base,))
    t.ok(row and "t160-locked" in row[0]["tags"], "the tag change is in the database", row)
    st = docker_state(base)
    t.ok(st is not None and st.get("Paused"), "the pause reached Docker", st)
    t.eq(list(db_query("PRAGMA integrity_check")[0].values())[0], "ok", "integrity_check")


def jbody_text(text):
    import json
    try:
        return json.loads(text)
    except ValueError:
        return {}


if __name__ == "__main__":
    run(main)
