#!/usr/bin/python3
"""t260 operator commands against the live stack: `container-manager status` (the stack's
processes with their pids, sockets, queue, containers by state, Docker reachability, as text
and JSON), `migrate`, `audit` (list; each ready query as JSON lines equal to the same SQL run
directly, as a table, with named parameters; export in the actions.jsonl shape) and `backup`
(an online copy taken while requests write: a valid database with the same rows)."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

CLI = os.environ.get("CM_CLI") or os.path.join(REPO, "cli", "container-manager")
ENVF = os.environ.get("CM_ENV_FILE", "")
AUDIT_DIR = os.environ.get("CM_AUDIT_SQL_DIR") or os.path.join(REPO, "sql", "audit")
QUERIES = ["actions-per-user", "container-history", "errors", "failed-logins", "sessions", "slowest-requests"]


def cli(*args, timeout=60):
    return subprocess.run([CLI] + list(args) + ["--env-file", ENVF], capture_output=True, text=True, timeout=timeout)


def direct(sql, params=None):
    """The query run by Python's sqlite3 on the live database (read-only): a list of dicts."""
    conn = db_connect()
    try:
        cur = conn.execute(sql, params or {})
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        conn.close()


def same_rows(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.keys() != y.keys():
            return False
        for k in x:
            if isinstance(x[k], float) or isinstance(y[k], float):
                if x[k] is None or y[k] is None or abs(float(x[k]) - float(y[k])) > 1e-9 * max(1.0, abs(float(y[k]))):
                    return False
            elif x[k] != y[k]:
                return False
    return True


def main(t):
    t.ok(os.access(CLI, os.X_OK) and os.path.isfile(ENVF), "the launcher and the stack's env file are there",
         {"cli": CLI, "env": ENVF})
    s = api()

    # ---- status
    r = cli("status", "--json")
    st = {}
    try:
        st = json.loads(r.stdout)
    except ValueError:
        pass
    t.eq(r.returncode, 0, "status --json exits 0 on a healthy stack", {"stdout": r.stdout[-1500:], "stderr": r.stderr[-800:]})
    procs = st.get("processes", {})
    # (CM_IT_NO_SERVE=1: the stack runs as units, with no serve above them)
    want_serve = None if os.environ.get("CM_IT_NO_SERVE") == "1" else SERVE_PID
    t.eq((procs.get("serve") or {}).get("pid"), want_serve, "status finds the supervising serve (its pid), if any")
    for name in ("nginx", "cm-fcgi", "cm-runner", "cm-ws"):
        p = procs.get(name) or {}
        alive = isinstance(p.get("pid"), int) and os.path.exists("/proc/%d" % p["pid"])
        t.ok(alive, "status finds %s running (pid %s)" % (name, p.get("pid")), p)
    t.ok((procs.get("cm-fcgi") or {}).get("workers", 0) >= 1, "status counts the pool's workers", procs.get("cm-fcgi"))
    t.ok(all((procs.get(n) or {}).get("socket") is True for n in ("cm-fcgi", "cm-runner", "cm-ws")),
         "status: the pool's, the runner's and the helper's sockets answer", procs)
    runner = db_query("SELECT pid FROM runner_state WHERE id = 1")
    t.eq((procs.get("cm-runner") or {}).get("pid"), runner[0]["pid"] if runner else None,
         "status's runner pid is the one the runner records")
    t.ok(st.get("docker", {}).get("reachable") is True and st.get("docker", {}).get("version"),
         "status: Docker reachable, with its version", st.get("docker"))
    q = st.get("queue", {})
    t.ok(isinstance(q.get("queued"), int) and isinstance(q.get("running"), int), "status reports the queue depth", q)
    want = {row["status"]: row["n"] for row in db_query("SELECT status, count(*) AS n FROM containers GROUP BY status")}
    t.eq(st.get("containers"), want, "status: containers by state as in the database")
    r = cli("status")
    t.ok(r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "ok" and "cm-runner" in r.stdout,
         "status (text) lists the processes and ends with ok", {"stdout": r.stdout})

    # ---- migrate on a running stack: nothing to do, nothing broken
    r = cli("migrate")
    t.ok(r.returncode == 0 and "up to date" in r.stdout, "migrate on the running stack: up to date",
         {"stdout": r.stdout, "stderr": r.stderr})
    t.eq(s.get("/healthz").status_code, 200, "the stack is healthy after migrate")

    # ---- traffic the audit queries will see
    bad = requests.get(URL + "/containers", auth=("t260-intruder", "wrong"), timeout=30)
    t.eq(bad.status_code, 401, "a failed login to audit")
    s.get("/containers/c00000000-0000-0000-0000-000000000000")
    cuid = must_create(s, t, name="a container whose history is audited")["cuid"]
    s.post("/containers/%s/start" % cuid)
    wait_until(lambda: db_query("SELECT 1 FROM audit WHERE cuid = ? AND action LIKE '%start%'", (cuid,)), timeout=10)
    wait_until(lambda: db_query("SELECT 1 FROM audit WHERE user = 't260-intruder'"), timeout=10)

    # ---- audit list
    r = cli("audit", "list")
    names = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    t.ok(r.returncode == 0 and names == QUERIES, "audit list names the ready queries", {"stdout": r.stdout, "stderr": r.stderr})

    # ---- every query: JSON lines equal to the SQL run directly
    for name in QUERIES:
        sql = open(os.path.join(AUDIT_DIR, name + ".sql")).read()
        params = {"cuid": cuid} if name == "container-history" else {}
        args = ["%s=%s" % kv for kv in params.items()]
        good, last = False, None
        for _ in range(5):  # rows may arrive between the two reads: compare again
            r = cli("audit", name, "--json", *args)
            try:
                got = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
            except ValueError:
                got = None
            exp = direct(sql, params)
            last = {"rc": r.returncode, "stderr": r.stderr[-500:], "got": (got or [])[:3], "expected": exp[:3],
                    "n_got": len(got or []), "n_expected": len(exp)}
            if r.returncode == 0 and got is not None and same_rows(got, exp):
                good = True
                break
            time.sleep(0.3)
        t.ok(good and (name not in ("container-history", "failed-logins", "actions-per-user") or last["n_got"] > 0),
             "audit %s --json: the same rows as the SQL run directly (%s rows)" % (name, last["n_got"]), last)

    hist = [json.loads(ln) for ln in cli("audit", "container-history", "cuid=" + cuid, "--json").stdout.splitlines()]
    t.ok(any(h.get("path") == "/containers/%s/start" % cuid for h in hist), "container-history holds the start", hist[-3:])
    r = cli("audit", "container-history")
    t.ok(r.returncode == 2 and "cuid=" in r.stderr, "a query without its parameter: exit 2 naming it", {"stderr": r.stderr})
    r = cli("audit", "failed-logins")
    lines = r.stdout.splitlines()
    exp = direct(open(os.path.join(AUDIT_DIR, "failed-logins.sql")).read())
    t.ok(r.returncode == 0 and lines and lines[0].split() == list(exp[0].keys()) if exp else False,
         "audit failed-logins (table): a header with the query's columns", {"stdout": r.stdout[:800]})
    t.ok(len(lines) == len(exp) + 2 and set(lines[1]) <= {"-", " "}, "the table: a rule and one line per row",
         {"lines": len(lines), "rows": len(exp)})
    for bad_name in ("no-such-query", "../0001_init", "errors;"):
        r = cli("audit", bad_name)
        t.eq(r.returncode, 2, "audit %r: exit 2" % bad_name, {"stderr": r.stderr})

    # ---- export in the actions.jsonl shape
    r = cli("audit", "export")
    try:
        rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    except ValueError:
        rows = None
    n_db = db_query("SELECT count(*) AS n FROM audit")[0]["n"]
    t.ok(r.returncode == 0 and rows is not None and 0 < len(rows) <= n_db and len(rows) >= n_db - 5,
         "audit export: one JSON line per audit row (%s lines, %s rows)" % (len(rows or []), n_db), {"stderr": r.stderr})
    rows = rows or []
    need = {"timestamp", "request_id", "user", "remote_addr", "method", "path", "action", "status", "duration_ms", "error", "code"}
    t.ok(rows and all(need <= set(x) for x in rows), "every line has the actions.jsonl keys", rows[:1])
    t.ok(all(RFC3339_Z.match(x["timestamp"]) for x in rows) and [x["timestamp"] for x in rows] == sorted(x["timestamp"] for x in rows),
         "timestamps are RFC 3339 UTC, oldest first")
    intr = [x for x in rows if x.get("user") == "t260-intruder"]
    t.ok(intr and intr[0]["error"] == "auth_error" and intr[0]["status"] == 401 and intr[0]["code"] == "INVALID_CREDENTIALS",
         "the failed login exports as an auth_error (the seed's check)", intr[:1])
    ok_rows = [x for x in rows if x.get("status") and x["status"] < 400]
    t.ok(ok_rows and all(x["error"] is None for x in ok_rows), "successful requests export with error null")
    since = rows[len(rows) // 2]["timestamp"] if rows else ""
    r = cli("audit", "export", "--since", since)
    sub = [json.loads(ln) for ln in r.stdout.splitlines()]
    t.ok(r.returncode == 0 and sub and all(x["timestamp"] >= since for x in sub) and len(sub) < len(rows) + 5,
         "audit export --since keeps the later rows only", {"since": since, "n": len(sub)})

    # ---- backup while requests write
    d = tempfile.mkdtemp(prefix="t260-")
    dest = os.path.join(d, "cm-backup.sqlite")
    stop = threading.Event()
    errors = []

    def writer():
        w = api()
        while not stop.is_set():
            try:
                w.get("/containers?limit=5")
                w.patch("/containers/%s" % cuid, json={"tags": ["t260", rand_suffix(4)]})
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
    th = threading.Thread(target=writer)
    th.start()
    time.sleep(0.5)
    n_before = db_query("SELECT count(*) AS n FROM audit")[0]["n"]
    r = cli("backup", dest, timeout=120)
    stop.set()
    th.join(30)
    t.ok(r.returncode == 0 and os.path.isfile(dest), "backup DEST while requests write: exit 0",
         {"stdout": r.stdout, "stderr": r.stderr, "writer_errors": errors[:3]})
    t.eq(oct(os.stat(dest).st_mode & 0o777) if os.path.exists(dest) else None, "0o600", "the backup is readable by its owner only")
    t.ok(not [f for f in os.listdir(d) if f != "cm-backup.sqlite"], "no temporary file left beside it", os.listdir(d))
    try:
        b = sqlite3.connect("file:%s?mode=ro" % dest, uri=True)
        integ = b.execute("PRAGMA integrity_check").fetchone()[0]
        mode = b.execute("PRAGMA journal_mode").fetchone()[0]
        tables = sorted(x[0] for x in b.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"))
        live_tables = sorted(x["name"] for x in db_query("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"))
        t.eq(integ, "ok", "the backup passes integrity_check")
        t.eq(mode, "delete", "the backup is one self-contained file (no WAL)")
        t.eq(tables, live_tables, "the backup has every table")
        # rows written before the copy are all there, the same
        maxid = b.execute("SELECT max(id) FROM audit").fetchone()[0] or 0
        bk = b.execute("SELECT id, ts, request_id, status, path FROM audit ORDER BY id").fetchall()
        live = [tuple(x.values()) for x in db_query("SELECT id, ts, request_id, status, path FROM audit WHERE id <= ? ORDER BY id", (maxid,))]
        t.ok(len(bk) >= n_before > 0 and [tuple(x) for x in bk] == live,
             "the backup's audit rows equal the live ones up to its last (%d rows, %d before the copy)" % (len(bk), n_before))
        bc = sorted(x[0] for x in b.execute("SELECT cuid FROM containers"))
        t.ok(cuid in bc and set(bc) <= set(x["cuid"] for x in db_query("SELECT cuid FROM containers")) | set(bc),
             "the backup has the containers", bc[:5])
        t.eq(b.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] if "schema_migrations" in tables else None,
             db_query("SELECT count(*) AS n FROM schema_migrations")[0]["n"] if "schema_migrations" in tables else None,
             "the backup has the same migrations applied")
        b.close()
    except Exception as e:  # noqa: BLE001
        t.ok(False, "the backup opens as a database", repr(e))
    r = cli("backup", dest)
    t.ok(r.returncode == 1 and "exists" in r.stderr, "backup refuses to overwrite without --force", {"stderr": r.stderr})
    r = cli("backup", dest, "--force")
    t.eq(r.returncode, 0, "backup --force replaces it", {"stderr": r.stderr})
    subprocess.run(["rm", "-rf", d])

    r = subprocess.run([CLI, "frobnicate"], capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 2 and "status" in r.stderr and "backup" in r.stderr, "an unknown command: usage naming every command")


if __name__ == "__main__":
    run(main)
